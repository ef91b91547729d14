"""The errors mlflow-xai raises on bad input. Each message says what was wrong and what is allowed."""


class XaiError(Exception):
    """Base class: an audit could not run because of its input, not because of a bug."""


class ConfigError(XaiError, ValueError):
    """The audit configuration is invalid."""


class ProbeError(XaiError, ValueError):
    """The probe set is invalid or does not fit the model."""


class ModelError(XaiError, ValueError):
    """The model cannot be audited as configured."""
