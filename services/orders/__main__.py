from services.shared.process import main

from .app import create_app
from .handlers import expire_saga_steps, setup

raise SystemExit(main("orders", create_app, setup, companions=[expire_saga_steps]))
