# Multi-stage: build a wheel set in one stage, run as a non-root user in a slim one.
# Not built on the development machines (no Docker engine runs there); kept deliberately simple.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY api ./api
COPY pki ./pki
COPY attest ./attest
COPY tlog ./tlog
COPY policies ./policies
COPY provision ./provision
COPY agent ./agent
RUN python -m pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/weighstation --create-home weighstation
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER weighstation
WORKDIR /var/lib/weighstation
ENV WEIGHSTATION_DATA_DIR=/var/lib/weighstation/data \
    WEIGHSTATION_HOST=0.0.0.0 \
    WEIGHSTATION_PORT=8443
VOLUME ["/var/lib/weighstation/data"]
EXPOSE 8443
ENTRYPOINT ["weighstation"]
CMD ["serve"]
