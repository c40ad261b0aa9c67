# One image for every service; the command picks it: `docker run IMAGE api|processor|...`.
# (No `# syntax=` line: BuildKit would pull its frontend image, and CI here has no registry.)
#
# BASE_IMAGE: any Debian-based image with `python` 3.11 and its venv module. Without a registry,
# scripts/container-engine.sh builds one from Debian's python3 (deploy/images/python) and
# docker-compose.yml passes it in PAYOUTS_BASE_IMAGE.
ARG BASE_IMAGE=python:3.11-slim

# ---- builder: compilers and pip live here only ---------------------------------------------
FROM ${BASE_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# A fallback for dependencies without a wheel for this platform (asyncmy, uvloop, httptools).
RUN apt-get update \
    && apt-get install --yes --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
# Same path as in the final image: a venv's scripts carry its absolute path in their shebang.
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Dependencies first, from pyproject.toml at the versions of constraints.txt (those CI tests), so
# this layer survives code changes.
# PIP_CONSTRAINT reaches the isolated environment that builds the wheel too (its setuptools).
COPY pyproject.toml constraints.txt ./
ENV PIP_CONSTRAINT=/src/constraints.txt
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > requirements.txt \
    && pip install --requirement requirements.txt

# Then the code, built into a wheel and installed (not editable) into the venv.
COPY . .
RUN pip wheel --no-deps --wheel-dir /tmp/wheels . \
    && pip install --no-deps /tmp/wheels/*.whl

# ---- runtime: the venv (which holds the code) on a slim Python, no compilers ---------------
FROM ${BASE_IMAGE} AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 payouts \
    && useradd --system --uid 10001 --gid payouts --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin payouts
COPY --from=builder /opt/venv /opt/venv
# Numeric, so orchestrators can verify "runAsNonRoot" without reading /etc/passwd.
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["payouts"]
CMD ["--help"]
