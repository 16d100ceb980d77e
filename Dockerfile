# One image for both entrypoints: `stagecoach operator` and `stagecoach-runner`.
# Build: make image (needs Docker). Multi-stage: wheels are built in the first stage and
# only the installed package is copied into a slim, non-root runtime.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY stage-runner/ stage-runner/
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin stagecoach
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER 65532:65532
ENTRYPOINT ["stagecoach"]
CMD ["operator", "--all-namespaces"]
