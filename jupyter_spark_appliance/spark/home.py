"""Where Spark's launcher lives: configured, $SPARK_HOME, or the pyspark package."""

from __future__ import annotations

import os
from pathlib import Path


class SparkNotFound(RuntimeError):
    pass


def find_spark_home(configured: str = "") -> Path:
    candidates = [configured, os.environ.get("SPARK_HOME", "")]
    for c in candidates:
        if c and (Path(c) / "bin" / "spark-class").is_file():
            return Path(c)
    try:
        import pyspark
    except ImportError:
        pass
    else:
        home = Path(pyspark.__file__).parent
        if (home / "bin" / "spark-class").is_file():
            return home
    raise SparkNotFound(
        "no Spark installation found: install pyspark (pip install 'jupyter-spark-appliance[spark]'), "
        "set SPARK_HOME, or set c.SparkApplianceApp.spark_home"
    )
