"""An adversarial probe of the whole public surface (see ``harness.py``); run by
``tests/test_reliability_adversarial.py`` and, for a report, ``python -m tests.adversarial.run``."""
