# One image for api, worker and migrate (docker-compose.yml picks the command).
# PyPI's default torch wheel is the CUDA build, which the GPU worker needs; the API never imports it.
# The dashboard's chart library and /docs's Swagger UI come from npm at build time (not committed;
# the same pinned versions as the Makefile's `vendor` target), so no page loads a script from a CDN.
FROM node:22-bookworm-slim AS vendor
RUN npm install --prefix /npm --no-audit --no-fund uplot@1.6.32 swagger-ui-dist@5.35.0 \
 && mkdir -p /vendor/swagger-ui \
 && cp /npm/node_modules/uplot/dist/uPlot.iife.min.js /npm/node_modules/uplot/dist/uPlot.min.css /vendor/ \
 && echo "uplot@1.6.32" > /vendor/VERSION \
 && cp /npm/node_modules/swagger-ui-dist/swagger-ui-bundle.js /npm/node_modules/swagger-ui-dist/swagger-ui.css /vendor/swagger-ui/ \
 && echo "swagger-ui-dist@5.35.0" > /vendor/swagger-ui/VERSION

FROM python:3.11-slim-bookworm

RUN apt-get update \
 && apt-get install -y --no-install-recommends wordnet-base dataset-fashion-mnist \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY core core
COPY store store
COPY worker worker
COPY api api
COPY --from=vendor /vendor api/dashboard/static/vendor
COPY client client
COPY migrations migrations
COPY cli cli
RUN pip install --no-cache-dir "torch>=2.3,<2.15" && pip install --no-cache-dir .

ENV XMODAL_DATA_DIR=/data
VOLUME /data
EXPOSE 8000
CMD ["xmodal", "serve", "--host", "0.0.0.0", "--port", "8000"]
