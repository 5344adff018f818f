from services.shared.process import main

from .app import create_app
from .handlers import setup

raise SystemExit(main("products", create_app, setup))
