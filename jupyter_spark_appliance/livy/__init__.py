"""A Livy-REST-compatible gateway running PySpark sessions on a Spark master.

Run it as ``python -m jupyter_spark_appliance.livy --master spark://HOST:PORT --port N``.
"""
