"""MLflow models-from-code entry of the retention pyfunc: ``mlflow.pyfunc.load_model`` runs this file (nothing is
unpickled) and the bundle's boosters stay in LightGBM's native text format, verified against the bundle's manifest
before they are parsed. Keep it import-light: it is executed at every load."""

import mlflow

from serving.pyfunc import RetentionPyfunc

mlflow.models.set_model(RetentionPyfunc())
