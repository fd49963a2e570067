"""Visit's aggregates: collectors, agencies and visits arrive with the field-visit issue.

Until then the service holds no aggregate of its own; it consumes cases.events with the same
exactly-once machinery as every service, so its store and positions are in place.
"""
