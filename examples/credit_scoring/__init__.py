"""Credit scoring: a FastAPI + scikit-learn model service, bare (``app:model_app``) and guarded (``app:app``)."""
