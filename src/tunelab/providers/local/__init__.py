"""This machine as a provider: jobs queued in the registry and run by the worker (in torchrun
ranks when asked), their files and outputs, and the models answered here."""
