# cutover: build on Debian 12 with its own library packages, run on a slim Debian 12.
FROM debian:12 AS build
RUN apt-get update && apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config libmicrohttpd-dev libcurl4-openssl-dev libssl-dev \
      libpq-dev libjansson-dev libcmocka-dev ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    && cmake --build /build -j"$(nproc)" --target cutover

FROM debian:12-slim
RUN apt-get update && apt-get install -y --no-install-recommends \
      libmicrohttpd12 libcurl4 libssl3 libpq5 libjansson4 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 cutover \
    && mkdir -p /var/spool/cutover && chown cutover /var/spool/cutover
COPY --from=build /build/cmd/cutover /usr/local/bin/cutover
USER 10001
EXPOSE 8081 9090
ENTRYPOINT ["/usr/local/bin/cutover"]
CMD ["proxy", "--config", "/etc/cutover/cutover.json"]
