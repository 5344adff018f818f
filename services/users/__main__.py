from services.shared.process import main

from .app import create_app

raise SystemExit(main("users", create_app, None))
