"""The shop: users, products, orders and payments, talking only through pgcourier."""
