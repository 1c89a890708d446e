# The sscsi image: one binary, CA certificates and the C runtime, nothing else (no shell and
# no `mount` binary: sscsi mounts tmpfs with mount(2)).
#
# `cargo xtask image` builds the same image without a container engine, reproducibly, from
# pinned Debian packages (xtask/image-packages.txt); this file is for those who prefer docker.
#
#   docker build -t sscsi .                                 # every provider
#   docker build --build-arg FEATURES=aws -t sscsi:aws .     # one cloud
#   docker build --build-arg FEATURES= -t sscsi:local .      # the local provider only
ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
ARG FEATURES="aws,azure,gcp,vault"
WORKDIR /src
COPY . .
RUN cargo build --profile dist --locked -p sscsi --no-default-features --features "${FEATURES}" \
    && cp target/dist/sscsi /sscsi

# distroless/cc: glibc and libgcc for the aws-lc crypto library, and CA certificates.
# It runs as root: mounting tmpfs for pods needs it (the chart makes the container privileged).
FROM gcr.io/distroless/cc-debian12
COPY --from=build /sscsi /sscsi
ENTRYPOINT ["/sscsi"]
CMD ["node"]
