"""Build the one Delta-enabled SparkSession of a process, with clear errors when Java or Delta's jars are missing."""

from __future__ import annotations

import logging
import os
import shutil
import sys
import warnings
from pathlib import Path

from pyspark.sql import SparkSession

DELTA_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


# PySpark logs every failed DataFrame call as a multi-kilobyte JSON stack trace; the exception itself
# carries the same message to whoever handles it.
logging.getLogger("DataFrameQueryContextLogger").setLevel(logging.CRITICAL)


class SparkSetupError(RuntimeError):
    """Spark could not start; the message says what is missing and how to fix it."""


def delta_maven_coordinate() -> str:
    """The Delta jar that `configure_spark_with_delta_pip` asks Ivy for, e.g. io.delta:delta-spark_4.2_2.13:4.4.0."""
    from delta import configure_spark_with_delta_pip

    builder = configure_spark_with_delta_pip(SparkSession.Builder())
    return builder._options["spark.jars.packages"]


def ivy_jar_dir(conf: dict[str, str] | None = None) -> Path:
    ivy_home = (conf or {}).get("spark.jars.ivy")
    # Spark 4 keeps Ivy's files in ~/.ivy2.5.2 unless spark.jars.ivy says otherwise.
    return Path(ivy_home or Path.home() / ".ivy2.5.2") / "jars"


def delta_jar_cached(conf: dict[str, str] | None = None) -> bool:
    group, artifact, version = delta_maven_coordinate().split(":")
    return (ivy_jar_dir(conf) / f"{group}_{artifact}-{version}.jar").exists()


def ensure_java() -> str:
    """Return JAVA_HOME, deriving it from `java` on PATH; raise a clear error when there is no Java."""
    java_home = os.environ.get("JAVA_HOME")
    if java_home and Path(java_home, "bin", "java").exists():
        return java_home
    java = shutil.which("java")
    if not java:
        raise SparkSetupError(
            "Java was not found: Spark needs a JDK 17 (`java` on PATH or JAVA_HOME). "
            "On Debian: `apt-get install -y openjdk-17-jdk-headless`."
        )
    java_home = str(Path(java).resolve().parent.parent)
    os.environ["JAVA_HOME"] = java_home
    return java_home


def get_or_create_session(
    master: str | None = "local[*]",
    remote: str | None = None,
    conf: dict[str, str] | None = None,
    app_name: str = "flightline",
    delta: bool = True,
) -> SparkSession:
    """The process's SparkSession: created once, reused afterwards, never stopped between assets.

    `remote` (a Spark Connect URL) replaces `master` for a cluster reached through Spark Connect; the
    server then carries Delta's jars itself.
    """
    active = SparkSession.getActiveSession()
    if active is not None:
        return active
    conf = dict(conf or {})
    if remote:
        return _connect_session(remote, conf, app_name)

    ensure_java()
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)

    builder = SparkSession.builder.appName(app_name)
    if master:
        builder = builder.master(master)
    if delta:
        conf = {**DELTA_CONF, **conf}
    for key, value in conf.items():
        builder = builder.config(key, str(value))
    if delta and "spark.jars" not in conf:
        from delta import configure_spark_with_delta_pip

        builder = configure_spark_with_delta_pip(builder)
    try:
        spark = builder.getOrCreate()
    except Exception as exc:  # the JVM did not start: say why in words
        if delta and "spark.jars" not in conf and not delta_jar_cached(conf):
            raise SparkSetupError(
                f"Delta Lake's jar {delta_maven_coordinate()} is not in the Ivy cache ({ivy_jar_dir(conf)}) "
                "and could not be fetched from Maven Central. Run `make jars` on a machine that reaches "
                "Maven Central, or set spark.jars to a local copy of the jar."
            ) from exc
        raise SparkSetupError(f"Spark did not start ({exc}). Check JAVA_HOME and the Spark conf.") from exc
    if delta:
        _check_delta_loaded(spark)
    return spark


def is_connect(spark: SparkSession) -> bool:
    """A Spark Connect session (`sc://...`): no JVM in this process, so no `_jvm`, `_jsc` or `sparkContext`."""
    return type(spark).__module__.startswith("pyspark.sql.connect")


def _connect_session(remote: str, conf: dict[str, str], app_name: str) -> SparkSession:
    """A Spark Connect client session. Its conf is applied as session conf (static keys such as spark.driver.memory
    are the server's and are skipped silently). Delta's jars and SQL extension are the server's: one round trip
    here makes an unreachable server fail now, in words, and a server without Delta's extension is logged."""
    builder = SparkSession.builder.remote(remote).appName(app_name)
    for key, value in conf.items():
        builder = builder.config(key, str(value))
    try:
        with warnings.catch_warnings(record=True) as skipped:  # one per static key the server keeps as it is
            warnings.simplefilter("always")
            spark = builder.getOrCreate()
        extensions = spark.conf.get("spark.sql.extensions", "") or ""
    except Exception as exc:
        raise SparkSetupError(f"the Spark Connect server at {remote} did not answer: {exc}") from exc
    static = [str(w.message).split(" due to")[0] for w in skipped if "CANNOT_MODIFY" in str(w.message)]
    for w in skipped:
        if "CANNOT_MODIFY" not in str(w.message):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if static:
        logging.getLogger(__name__).info("Spark Connect: the server keeps its own static conf: %s", "; ".join(static))
    # Delta's commit conflicts then arrive as delta.exceptions' classes, which ml/delta_io.py retries (the classic
    # client's conversion is installed by importing delta.exceptions; this is Connect's).
    import delta.connect.exceptions  # noqa: F401

    if "DeltaSparkSessionExtension" not in extensions:
        logging.getLogger(__name__).warning(
            "the Spark Connect server at %s does not list Delta's SQL extension (spark.sql.extensions=%r): Delta "
            "queries fail unless the server has Delta built in (infra/spark-connect.sh configures it)",
            remote,
            extensions,
        )
    return spark


def _check_delta_loaded(spark: SparkSession) -> None:
    try:
        jvm = spark._jvm  # type: ignore[attr-defined]
        # --packages jars live in Spark's own class loader, not the JVM's system one.
        jvm.java.lang.Thread.currentThread().getContextClassLoader().loadClass(
            "io.delta.sql.DeltaSparkSessionExtension"
        )
    except Exception as exc:
        raise SparkSetupError(
            "Spark started without Delta Lake's classes on its classpath: every Delta query would fail. "
            f"Expected the jar {delta_maven_coordinate()} (run `make jars`)."
        ) from exc


if __name__ == "__main__":  # `python -m ml.spark`: fetch Delta's jars once and prove a Delta round trip works
    import tempfile

    session = get_or_create_session(master="local[1]", conf={"spark.ui.enabled": "false"})
    with tempfile.TemporaryDirectory() as tmp:
        session.range(3).write.format("delta").save(tmp + "/t")
        assert session.read.format("delta").load(tmp + "/t").count() == 3
    print(f"Spark {session.version} with {delta_maven_coordinate()}: Delta round trip OK")
