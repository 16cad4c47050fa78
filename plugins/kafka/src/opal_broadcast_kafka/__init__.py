"""kafka backbone for opal-broadcast."""
