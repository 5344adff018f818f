-- Categories come into being the first time a product names them.
INSERT INTO products.category (name)
VALUES (%(name)s)
ON CONFLICT (name) DO NOTHING
