"""The orders service: places orders and runs the order saga (stock, then payment)."""
