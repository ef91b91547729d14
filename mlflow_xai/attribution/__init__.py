"""Attribution: the methods (``methods/``, one adapter file per Captum algorithm family, in a registry
that refuses duplicate names), their parameter models (``parameters``), baselines, the quadrature
rules and adaptive step refinement of Integrated Gradients, and its path profiles.

May import: ``model``, ``checks``, ``seeding``, ``strict``, ``errors``. Never ``engine``, ``report``
or ``artifacts``. This ``__init__`` imports nothing, so that ``config`` can read ``parameters``
without loading torch.
"""
