"""Launch a Spark standalone cluster with a Livy endpoint from inside Jupyter."""

__version__ = "0.1.0"


def _jupyter_server_extension_points() -> list[dict[str, object]]:
    from .app import SparkApplianceApp

    return [{"module": "jupyter_spark_appliance", "app": SparkApplianceApp}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    return [{"src": "labextension", "dest": "jupyter-spark-appliance"}]


def load_ipython_extension(ipython) -> None:  # noqa: ANN001
    """``%load_ext jupyter_spark_appliance`` registers ``%spark_appliance``."""
    from .magic import SparkApplianceMagics

    ipython.register_magics(SparkApplianceMagics(ipython))
