"""What every shop service uses: settings, HTTP plumbing, auth, message contracts."""
