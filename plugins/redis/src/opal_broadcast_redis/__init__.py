"""redis backbone for opal-broadcast."""
