"""The products service: catalog, inventory and stock reservations for orders."""
