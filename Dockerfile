# Crucible's platform image: one image for every role (web, worker, sessions, reconciler).
#
# Build it with `make image` (deploy/build_image.py), which first makes what this file needs and
# cannot fetch itself on a machine with no container registry:
#   - BASE: a minimal Debian (python3, python3-venv, ca-certificates, libseccomp2, tzdata)
#     debootstrapped from the host's own mirror and `docker import`ed (no `docker pull`);
#   - build/wheelhouse/: every runtime requirement of requirements.txt as a wheel, fetched on the host.
# Nothing in this build touches the network: pip installs with --no-index from the wheelhouse.
#
# Run a role:   docker run crucible:latest web|worker|sessions|reconciler|manage <args>
# (deploy/entrypoint.sh; compose.yaml runs all of them.)
ARG BASE=crucible-platform-base:latest

# --- stage 1: the virtualenv, from the wheelhouse only -----------------------------------------
FROM ${BASE} AS venv
COPY build/requirements-image.txt /tmp/requirements.txt
COPY build/wheelhouse/ /tmp/wheelhouse/
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-index --no-cache-dir --find-links /tmp/wheelhouse \
        --requirement /tmp/requirements.txt \
 && /opt/venv/bin/pip check \
 && find /opt/venv -name '__pycache__' -prune -exec rm -rf {} +

# --- stage 2: the platform ----------------------------------------------------------------------
FROM ${BASE}
# The platform's own user (not the sandboxes' uid 10001). Workers and the session host reach the
# Docker engine through its socket's group, given at run time (compose.yaml: group_add).
RUN groupadd --system --gid 10100 crucible \
 && useradd --system --uid 10100 --gid crucible --home-dir /app --no-create-home --shell /usr/sbin/nologin crucible
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DJANGO_SETTINGS_MODULE=crucible.settings \
    CRUCIBLE_ENV=production \
    CRUCIBLE_DATA_DIR=/var/lib/crucible \
    PORT=8000
COPY --from=venv /opt/venv /opt/venv
WORKDIR /app
COPY manage.py ./
COPY crucible/ crucible/
COPY apps/ apps/
COPY templates/ templates/
COPY static/ static/
# The sandboxes' seccomp profile (apps/sandboxing/policy.py) and the registry path of their image.
COPY sandbox/ sandbox/
COPY deploy/entrypoint.sh /usr/local/bin/crucible-entrypoint
# Static files are collected (hashed and compressed) into the image; whitenoise serves them.
# The key exists only for this one command: settings refuse to start in production without one.
RUN SECRET_KEY=collectstatic-only-not-a-secret python -m django collectstatic --noinput -v 0 \
 && mkdir -p /var/lib/crucible \
 && chown crucible:crucible /var/lib/crucible \
 && python -m compileall -q /app/apps /app/crucible
USER crucible:crucible
EXPOSE 8000
# Liveness only (the process answers); readiness (/api/v1/health/) also needs workers and the engine.
# Only the web role serves HTTP: compose.yaml turns this check off for the other roles.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/api/v1/health/live/' % os.environ.get('PORT', '8000'), timeout=4)"
ENTRYPOINT ["crucible-entrypoint"]
CMD ["web"]
