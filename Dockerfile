# syntax=docker/dockerfile:1
# quickpay-engine as a container: the wheel built by maturin in a Rust image, installed
# into a slim Python runtime that runs as a non-root user with the data dir as a volume.
#
#   docker build -t quickpay-engine .
#   docker run -v qp-data:/var/lib/quickpay -p 50051:50051 -p 9464:9464 quickpay-engine
#
# The runtime's Python (3.11) is the builder's (Debian bookworm's), so the wheel's ABI
# matches; the Rust toolchain is the one rust-toolchain.toml pins.

FROM rust:1.95.0-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/maturin && /opt/maturin/bin/pip install --no-cache-dir maturin==1.16.0
WORKDIR /src
COPY Cargo.toml Cargo.lock rust-toolchain.toml pyproject.toml README.md LICENSE requirements.lock ./
COPY engine engine
COPY protos protos
COPY python python
RUN /opt/maturin/bin/maturin build --release --locked --interpreter python3 --out /wheels

FROM python:3.11-slim-bookworm AS runtime
# The runtime dependencies at the versions requirements.lock pins (the dev tools in it
# are only constraints here, not installed).
COPY --from=build /wheels /wheels
COPY requirements.lock /tmp/requirements.lock
RUN pip install --no-cache-dir --constraint /tmp/requirements.lock /wheels/*.whl \
 && rm -rf /wheels /tmp/requirements.lock \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/quickpay quickpay \
 && install -d -o quickpay -g quickpay -m 0700 /var/lib/quickpay
USER 10001:10001
VOLUME ["/var/lib/quickpay"]
# Settings come from one file (a variable or a flag still beats it), so a mounted file
# can change any of them.
COPY deploy/docker/quickpay.toml /etc/quickpay/quickpay.toml
ENV QUICKPAY_CONFIG=/etc/quickpay/quickpay.toml \
    PYTHONUNBUFFERED=1
EXPOSE 50051 9464
# Live as long as the event loop answers (/livez on the metrics port); readiness is the
# orchestrator's own probe of /readyz.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:9464/livez', timeout=2).status != 200)"]
ENTRYPOINT ["quickpay"]
CMD ["serve"]
