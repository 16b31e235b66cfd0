# syntax=docker/dockerfile:1
# classify serve in a container: the model is read from /models (a mounted volume, or baked in by
# an image built FROM this one); see README "Running on Kubernetes".
#   docker build -t classify:0.1.0 .
#   docker run -p 9876:9876 -v "$PWD/models/flowers:/models:ro" classify:0.1.0
# GPU (CUDA 12): --build-arg ONNXRUNTIME_NODE_INSTALL=cuda12 fetches ONNX Runtime's CUDA provider
# at build (the build needs network), and --build-arg RUNTIME_IMAGE names a base that has Node 20
# and CUDA 12 with cuDNN 9 (README, "The image": GPU).
ARG RUNTIME_IMAGE=node:20-slim

# TypeScript to dist/: the only stage with the dev dependencies.
FROM node:20-slim AS build
WORKDIR /app
COPY package.json package-lock.json .npmrc tsconfig.json ./
# No install scripts: the root's prepare (tsc) needs src/, copied below; onnxruntime-node's only
# downloads CUDA libraries, which this stage does not use.
RUN npm ci --ignore-scripts
COPY src ./src
RUN npx tsc -p tsconfig.json

# The runtime dependencies alone.
FROM node:20-slim AS deps
ARG ONNXRUNTIME_NODE_INSTALL=skip
WORKDIR /app
COPY package.json package-lock.json .npmrc ./
# --ignore-scripts: prepare would run tsc, a dev dependency. sharp and onnxruntime-node ship
# prebuilt binaries for linux-x64 glibc; onnxruntime-node's own script only fetches CUDA libraries,
# run here when asked for.
RUN npm ci --omit=dev --ignore-scripts \
 && if [ "$ONNXRUNTIME_NODE_INSTALL" != skip ]; then ONNXRUNTIME_NODE_INSTALL="$ONNXRUNTIME_NODE_INSTALL" node node_modules/onnxruntime-node/script/install; fi

FROM ${RUNTIME_IMAGE}
ENV NODE_ENV=production \
    MALLOC_ARENA_MAX=2
WORKDIR /app
COPY package.json ./
COPY bin ./bin
COPY src/proto/vendor ./src/proto/vendor
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# The node image's unprivileged user, by number so that Kubernetes' runAsNonRoot can check it.
USER 1000:1000
EXPOSE 9876
ENTRYPOINT ["node", "/app/bin/classify.js", "serve", "--host", "0.0.0.0", "--port", "9876", "--graph", "/models"]
