"""Per-prediction explanations and adverse-action reason codes (the ``explain`` stage).

Modules: ``binding`` (model, input row, background), ``explainers`` (shap explainer by model type),
``reasons`` (Reg B reason codes), ``worker`` (deferred, batched), ``render`` (plain language), ``stage``
(the pipeline hook). Importing this package imports neither shap nor scikit-learn: they load when a route with a
model object is built.
"""
