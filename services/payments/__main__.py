from services.payments.app import create_app
from services.payments.handlers import setup
from services.shared.process import main

raise SystemExit(main("payments", create_app, setup))
