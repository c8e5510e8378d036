# syntax=docker/dockerfile:1
# Build: docker build -t leadbridge --build-arg VERSION=$(git describe --always) .
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.Version=${VERSION}" -o /out/leadbridge ./cmd/leadbridge \
 && mkdir -p /out/data

# distroless/static: CA certificates, tzdata, a non-root user, no shell.
FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/leadbridge /usr/local/bin/leadbridge
COPY --from=build --chown=nonroot:nonroot /out/data /data
USER nonroot:nonroot
WORKDIR /data
VOLUME ["/data"]
EXPOSE 9108
# The image has no shell or curl; the binary checks its own /healthz.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s CMD ["/usr/local/bin/leadbridge", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/leadbridge"]
CMD ["run", "--config", "/etc/leadbridge/config.yaml"]
