"""The users service: accounts, passwords, roles and the tokens every service trusts."""
