# Airflow's official image, extended with Batchwatch's pinned requirements and code.
# The base tag's Airflow version is requirements.txt's apache-airflow pin (tests/docs/test_compose.py
# checks it). The image already ships the Celery and Redis providers the CeleryExecutor needs.
FROM apache/airflow:3.3.2-python3.11

# No Airflow constraints file (-c): requirements.txt is already a complete set of pins, the one `make
# test` runs against; a constraints file would fail the build wherever a tested pin differs from
# Airflow's, instead of installing what we tested. Airflow cannot move: requirements.txt pins
# apache-airflow to this image's version. Not --no-deps either: the pins name our direct imports,
# not every transitive dependency, so pip still has to resolve those.
COPY --chown=airflow:0 requirements.txt /opt/airflow/requirements.txt
RUN pip install --no-cache-dir -r /opt/airflow/requirements.txt

# The same layout as a checkout, so the image runs without the compose file's bind mounts (a worker
# on another machine) and `batchwatch` imports from include/ as it does through bin/env.
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/
COPY --chown=airflow:0 include/ /opt/airflow/include/
COPY --chown=airflow:0 tools/ /opt/airflow/tools/
ENV PYTHONPATH=/opt/airflow:/opt/airflow/include:/opt/airflow/plugins \
    BATCHWATCH_ARTIFACT_ROOT=/opt/airflow/artifacts

# A named volume starts as a copy of the image's folder at its mount point: made here, group 0 and
# group-writable, the artifact store, logs and logins are writable by any AIRFLOW_UID in group 0.
RUN mkdir -p /opt/airflow/artifacts /opt/airflow/auth /opt/airflow/logs \
    && chmod -R g+rwX /opt/airflow/artifacts /opt/airflow/auth /opt/airflow/logs
