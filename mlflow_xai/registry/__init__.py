"""The registry webhook receiver (``mlflow-xai serve``): every new model version arrives audited.

``signature`` verifies MLflow's webhook deliveries, ``queue`` keeps the accepted work durably in
SQLite, ``worker`` audits each version against the one holding the baseline alias and tags it, and
``server`` is the HTTP endpoint MLflow delivers to.

May import: every stage below (the engine through the command line's audit, ``tracking``) and MLflow.
"""
