"""postgres backbone for opal-broadcast."""
