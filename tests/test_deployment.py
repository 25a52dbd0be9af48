"""docker-compose.yml, Dockerfile and .dockerignore, checked against what the code reads.

There is no Docker engine on the test machines, so the files are parsed and compared with the
code: the environment variables ``BackendConfig.from_env`` and ``MediaConfig.from_env`` ask for
(recorded by calling them with a mapping that logs every lookup), the ``vrshq`` subcommands, the
pins of scripts/setup.sh (the script .ci/run installs with) and pyproject.toml, and the README.
"""

from __future__ import annotations

import argparse
import fnmatch
import re
import shlex
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml  # PyYAML comes with hydra-core/omegaconf (sam2); a missing one fails, not skips

from vrshq.backend.config import BOUNDS

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"

SERVICES = {"label-studio", "redis", "backend", "worker"}
BACKENDS = ("backend", "worker")  # the services that run vrshq with the backend's environment

# Variables the code reads that the compose file deliberately leaves unset (the default is right).
LEFT_TO_DEFAULTS = {
    "LABEL_STUDIO_HOST": "alias of LABEL_STUDIO_URL, which is set",
    "LABEL_STUDIO_ACCESS_TOKEN": "alias of LABEL_STUDIO_API_KEY, which is set",
    "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": "alias of LOCAL_FILES_DOCUMENT_ROOT, which is set",
    "VRSHQ_MEDIA_ROOTS": "extra media roots; the one root is LOCAL_FILES_DOCUMENT_ROOT",
    **{var: "a request bound; its default is in the README's limits table"
       for var in BOUNDS.values()},
}

# Work in progress elsewhere in the project. Each entry must still be pending: once the code reads
# the variable / has the subcommand / the README names it, the test says to delete the entry.
PENDING_ENV: dict[str, str] = {}
PENDING_SUBCOMMANDS: dict[str, str] = {}
README_PENDING: dict[str, str] = {}

_VAR = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}")


# --- helpers ---------------------------------------------------------------------------------


class RecordingEnv(dict):
    """A mapping that remembers every key looked up in it."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)
        self.asked: set[str] = set()

    def get(self, key, default=None):
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key) -> bool:
        self.asked.add(key)
        return super().__contains__(key)


def read_names(env: dict[str, str] | None = None) -> set[str]:
    """The variable names BackendConfig.from_env and MediaConfig.from_env ask for, given ``env``."""
    from vrshq.backend.config import BackendConfig
    from vrshq.backend.labelstudio.media import MediaConfig

    asked: set[str] = set()
    recorder = RecordingEnv(env or {})
    BackendConfig.from_env(recorder)
    asked |= recorder.asked
    recorder = RecordingEnv(env or {})
    MediaConfig.from_env(recorder)
    asked |= recorder.asked
    return asked


def source_env_names() -> set[str]:
    """Names read with ``os.environ.get("X")`` / ``os.environ["X"]`` anywhere in the package sources."""
    pattern = re.compile(r"""environ(?:\.get\(|\[)\s*["']([A-Z][A-Z0-9_]*)["']""")
    names: set[str] = set()
    for folder in ("vrshq", "backend", "plugins"):
        for path in (ROOT / folder).rglob("*.py"):
            names |= set(pattern.findall(path.read_text()))
    return names


def env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: not KEY=VALUE: {line!r}"
            values[key.strip()] = value.strip()
    return values


def interpolate(value: object, variables: dict[str, str]) -> str:
    """Compose's ``${VAR}``, ``${VAR:-default}``, ``${VAR:?error}`` (no nesting) with ``variables``."""

    def one(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        have = variables.get(name)
        if op in (":-", ":?") and not have:
            have = None
        if have is not None:
            return have
        if op in ("-", ":-"):
            return arg
        raise AssertionError(f"${{{name}}} is not set (.env.example lacks it): {arg}")

    text = str(value)
    out = _VAR.sub(one, text)
    assert "$" not in _VAR.sub("", text), f"unsupported interpolation in {text!r}"
    return out


@pytest.fixture(scope="module")
def compose() -> dict:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def services(compose: dict) -> dict[str, dict]:
    return compose["services"]


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the KEY=VALUE list form
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def resolved_env(service: dict) -> dict[str, str]:
    variables = env_example()
    return {k: interpolate(v, variables) for k, v in environment(service).items()}


def mounts(service: dict) -> list[tuple[str, str, bool]]:
    """(source, target, read_only) of each volume, short or long syntax."""
    out = []
    for item in service.get("volumes") or []:
        if isinstance(item, str):
            parts = interpolate(item, env_example()).split(":")
            source, target = parts[0], parts[1]
            out.append((source, target, len(parts) > 2 and "ro" in parts[2].split(",")))
        else:
            out.append((item.get("source", ""), item["target"], bool(item.get("read_only"))))
    return out


def mount_at(service: dict, path: str) -> tuple[str, str, bool]:
    path = path.rstrip("/")
    found = [m for m in mounts(service) if m[1].rstrip("/") == path]
    assert found, f"nothing is mounted at {path} (mounts: {mounts(service)})"
    return found[0]


def subcommands() -> set[str]:
    from vrshq.cli import build_parser

    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(action.choices)


def command(service: dict) -> list[str]:
    cmd = service.get("command")
    return shlex.split(cmd) if isinstance(cmd, str) else [str(c) for c in cmd or []]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    lines, current = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        lines.append(current)
        current = ""
    assert not current, "Dockerfile ends inside a continued line"
    out = []
    for line in lines:
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def exec_form(args: str) -> list[str]:
    import json

    if args.startswith("["):
        return json.loads(args)
    return shlex.split(args)


# --- the compose file ------------------------------------------------------------------------


def test_the_four_services_exist(compose):
    assert SERVICES <= set(services(compose)), f"missing: {SERVICES - set(services(compose))}"


def test_images_are_pinned(compose):
    import tomllib

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    ls_version = re.search(r"^LS_VERSION=(\S+)", (ROOT / "scripts/setup_labelstudio.sh").read_text(), re.MULTILINE)
    for name, service in services(compose).items():
        image = service.get("image")
        assert image, f"{name}: no image"
        assert "@sha256:" in image or re.search(r":\d+(\.\d+)+[\w.-]*$", image), \
            f"{name}: image {image!r} is not pinned to a version"
        assert not image.endswith(":latest")
    # the same Label Studio as the test suite runs (scripts/setup_labelstudio.sh)
    assert services(compose)["label-studio"]["image"] == f"heartexlabs/label-studio:{ls_version[1]}"
    for name in BACKENDS:
        service = services(compose)[name]
        assert service["image"] == f"vrshq-backend:{version}", f"{name}: tag it with pyproject's version"
        build = service.get("build")
        build = {"context": build} if isinstance(build, str) else build
        assert build and (ROOT / build["context"]).resolve() == ROOT, f"{name}: not built from the repo"
        assert (ROOT / build["context"] / build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE


def test_ports(compose):
    svc = services(compose)
    assert "8080:8080" in [str(p) for p in svc["label-studio"].get("ports", [])]
    assert "9090:9090" in [str(p) for p in svc["backend"].get("ports", [])]
    cmd = command(svc["backend"])
    assert cmd[cmd.index("--port") + 1] == "9090" and cmd[cmd.index("--host") + 1] == "0.0.0.0"
    # the worker and Redis are reached over the compose network only
    assert not svc["worker"].get("ports") and not svc["redis"].get("ports")


def test_worker_reserves_a_gpu(compose):
    devices = (services(compose)["worker"].get("deploy", {}).get("resources", {})
               .get("reservations", {}).get("devices") or [])
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", [])
               and (d.get("count") in (1, "all") or d.get("device_ids")) for d in devices), devices


def test_redis_has_a_healthcheck_and_the_backends_wait_for_it(compose):
    svc = services(compose)
    test = svc["redis"].get("healthcheck", {}).get("test")
    assert test and "ping" in " ".join(test if isinstance(test, list) else [test])
    for name in BACKENDS:
        assert svc[name].get("depends_on", {}).get("redis", {}).get("condition") == "service_healthy"


def test_volumes_are_mounted_where_the_env_points(compose):
    svc = services(compose)
    declared = set(compose.get("volumes") or {})
    for name in BACKENDS:
        env = resolved_env(svc[name])
        source, _, read_only = mount_at(svc[name], env["MODEL_DIR"])
        assert source in declared and not read_only, f"{name}: MODEL_DIR must be a writable named volume"
        _, _, read_only = mount_at(svc[name], env["VRSHQ_MODEL"])
        assert read_only, f"{name}: the model folder should be mounted read-only"
        media, _, read_only = mount_at(svc[name], env["LOCAL_FILES_DOCUMENT_ROOT"])
        assert media in declared and not read_only  # keyframe images are written beside videos
    ls = svc["label-studio"]
    ls_env = resolved_env(ls)
    assert ls_env["LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED"] == "true"
    ls_media, _, _ = mount_at(ls, ls_env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"])
    assert ls_media == media, "Label Studio and the backend must share the media volume"
    # the same path in both, so a local-files storage path means the same file everywhere
    assert ls_env["LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"] == resolved_env(svc["backend"])["LOCAL_FILES_DOCUMENT_ROOT"]
    source, _, _ = mount_at(ls, "/label-studio/data")
    assert source == "mydata" and "mydata" in declared
    for service in svc.values():
        for source, _, _ in mounts(service):
            if not source.startswith((".", "/", "$", "~")):
                assert source in declared, f"volume {source!r} is not declared"


def test_the_backends_reach_label_studio_and_redis_by_service_name(compose):
    svc = services(compose)
    for name in BACKENDS:
        env = resolved_env(svc[name])
        url = urlsplit(env["LABEL_STUDIO_URL"])
        assert url.hostname == "label-studio" and url.port == 8080, env["LABEL_STUDIO_URL"]
        redis = urlsplit(env["REDIS_URL"])
        assert redis.scheme == "redis" and redis.hostname == "redis" and redis.port == 6379
        for key, value in env.items():
            assert not re.search(r"localhost|127\.\d+\.\d+\.\d+|0\.0\.0\.0|\[::1\]", value), \
                f"{name}: {key}={value}: a container's localhost is itself"


def test_label_studio_accepts_a_backend_on_the_network(compose):
    raw = environment(services(compose)["label-studio"])
    env = resolved_env(services(compose)["label-studio"])
    assert env["LABEL_STUDIO_ML_BLOCK_LOCAL_IP"] == "false"
    assert env["LABEL_STUDIO_SSRF_PROTECTION_ENABLED"] == "false"
    assert env["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    assert float(env["ML_TIMEOUT_HEALTH"]) >= 5 and float(env["ML_TIMEOUT_SETUP"]) >= 5
    for key in ("LABEL_STUDIO_USERNAME", "LABEL_STUDIO_PASSWORD", "LABEL_STUDIO_USER_TOKEN"):
        assert _VAR.fullmatch(raw[key]), f"{key} must come from .env, not the compose file"
    # the backend's token is Label Studio's user token
    token_var = _VAR.fullmatch(raw["LABEL_STUDIO_USER_TOKEN"])["name"]
    for name in BACKENDS:
        api_key = _VAR.fullmatch(environment(services(compose)[name])["LABEL_STUDIO_API_KEY"] or "")
        assert api_key and api_key["name"] == token_var


def test_secrets_come_from_the_env_file(compose):
    text = COMPOSE.read_text()
    example = env_example()
    for match in _VAR.finditer(text):
        if match["op"] in (None, ":?", "?"):  # required: .env must provide it
            assert match["name"] in example, f"${{{match['name']}}} is required but not in .env.example"
    used = {m["name"] for m in _VAR.finditer(text)}
    assert set(example) <= used, f".env.example sets variables the compose file never uses: {set(example) - used}"
    for name in BACKENDS:
        raw = environment(services(compose)[name])
        for key in ("LABEL_STUDIO_API_KEY", "BASIC_AUTH_PASS"):
            assert _VAR.fullmatch(raw[key]), f"{name}: {key} must be a ${{...}} from .env"


def test_every_variable_the_backend_reads_is_set_or_left_to_a_known_default(compose):
    names = read_names()
    stale = set(LEFT_TO_DEFAULTS) - names
    assert not stale, f"LEFT_TO_DEFAULTS names variables the code no longer reads: {stale}"
    for name in BACKENDS:
        missing = names - set(environment(services(compose)[name])) - set(LEFT_TO_DEFAULTS)
        assert not missing, f"{name}: set these in docker-compose.yml (or list them in LEFT_TO_DEFAULTS): {missing}"
        overlap = set(LEFT_TO_DEFAULTS) & set(environment(services(compose)[name]))
        assert not overlap, f"{name}: {overlap} are set but listed in LEFT_TO_DEFAULTS"


def test_every_variable_in_the_backends_is_one_the_code_reads(compose):
    for name in BACKENDS:
        env = resolved_env(services(compose)[name])
        known = read_names(env) | source_env_names()
        unknown = set(env) - known - set(PENDING_ENV)
        assert not unknown, f"{name}: no code reads {unknown} (a typo?)"
    done = set(PENDING_ENV) & (read_names(resolved_env(services(compose)["backend"])) | source_env_names())
    assert not done, f"the code reads {done} now: delete it from PENDING_ENV"


def test_the_compose_environment_makes_a_valid_config(compose):
    from vrshq.backend.config import BackendConfig
    from vrshq.backend.labelstudio.media import MediaConfig

    for name in BACKENDS:
        env = resolved_env(services(compose)[name])
        config = BackendConfig.from_env(env)
        assert config.data_dir == env["MODEL_DIR"] and config.model_dir == env["VRSHQ_MODEL"]
        assert config.local_roots == (env["LOCAL_FILES_DOCUMENT_ROOT"],)
        assert config.label_studio_url == env["LABEL_STUDIO_URL"] and config.api_key
        assert not config.auth_enabled  # .env.example leaves basic auth off
        media = MediaConfig.from_env(env)
        assert media.local_roots == (env["LOCAL_FILES_DOCUMENT_ROOT"],) and media.api_key == config.api_key


def test_every_variable_the_code_reads_is_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    names = read_names()
    undocumented = {n for n in names if not re.search(rf"\b{n}\b", readme)} - set(README_PENDING)
    assert not undocumented, f"the README does not mention {undocumented}"
    done = {n for n in README_PENDING if re.search(rf"\b{n}\b", readme)}
    assert not done, f"the README mentions {done} now: delete it from README_PENDING"


def test_commands_are_vrshq_subcommands(compose):
    from vrshq.cli import build_parser

    available = subcommands()
    for name in BACKENDS:
        cmd = command(services(compose)[name])
        assert cmd[0] == "vrshq", f"{name}: {cmd}"
        if cmd[1] in PENDING_SUBCOMMANDS:
            assert cmd[1] not in available, f"`vrshq {cmd[1]}` exists now: delete it from PENDING_SUBCOMMANDS"
            continue
        assert cmd[1] in available, f"{name}: `vrshq {cmd[1]}` is not a subcommand ({sorted(available)})"
        build_parser().parse_args(cmd[1:])  # the flags parse (exits 2 otherwise)
    assert command(services(compose)["backend"])[1] == "serve"


# --- the Dockerfile --------------------------------------------------------------------------


def test_dockerfile_installs_the_pinned_set_with_setup_sh():
    instructions = dockerfile_instructions()
    words = [w for w, _ in instructions]
    assert words[0] == "FROM" or (words[0] == "ARG" and "FROM" in words)
    base = dict(instructions)["FROM"]
    assert re.search(r":3\.11[\w.-]*$", base), f"base {base!r}: Python 3.11 (pyproject: >=3.11,<3.12)"
    runs = [i for i, (w, a) in enumerate(instructions) if w == "RUN" and "scripts/setup.sh" in a]
    assert runs, "the Dockerfile must run scripts/setup.sh (the same pinned set as .ci/run)"
    copies = [i for i, (w, a) in enumerate(instructions) if w in ("COPY", "ADD") and re.match(r"\.\s", a)]
    assert copies and copies[0] < runs[0], "copy the repository before running scripts/setup.sh"
    workdir = [a for w, a in instructions[: runs[0]] if w == "WORKDIR"]
    assert workdir and workdir[-1] == "/app"
    env = " ".join(a for w, a in instructions if w == "ENV")
    assert re.search(r"PATH=/app/\.venv/bin:\$PATH", env), "put /app/.venv/bin first on PATH"
    # .ci/run installs with the same script, and the script pins what pyproject.toml pins
    assert re.search(r"^bash scripts/setup\.sh", (ROOT / ".ci/run").read_text(), re.MULTILINE)
    setup = (ROOT / "scripts/setup.sh").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    for pin in ("torch==", "torchvision==", "sam2=="):
        in_pyproject = re.search(rf'"({re.escape(pin)}[\d.]+)"', pyproject)
        assert in_pyproject and f'"{in_pyproject[1]}"' in setup, f"{pin}: setup.sh and pyproject.toml differ"
    assert re.search(r'SAM2_BUILD_CUDA=0 \S+ --no-build-isolation "sam2==', setup)
    assert not re.search(r"pip[^\n]*install[^\n]*(torch|sam2)", DOCKERFILE.read_text()), \
        "install torch/sam2 through scripts/setup.sh only, so the pins cannot drift"


def test_dockerfile_serves_as_a_non_root_user():
    instructions = dockerfile_instructions()
    cmd = [a for w, a in instructions if w in ("CMD", "ENTRYPOINT")]
    assert cmd, "no CMD"
    argv = exec_form([a for w, a in instructions if w == "CMD"][-1])
    assert argv[:2] == ["vrshq", "serve"] and argv[argv.index("--host") + 1] == "0.0.0.0"
    port = argv[argv.index("--port") + 1]
    assert any(w == "EXPOSE" and port in a.split() for w, a in instructions), f"EXPOSE {port}"
    users = [a for w, a in instructions if w == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "run as a non-root user"
    assert not any(w == "ENTRYPOINT" for w, _ in instructions) or "vrshq" in " ".join(cmd)


def test_dockerignore_keeps_the_venvs_out_and_the_sources_in():
    patterns = [p.strip() for p in DOCKERIGNORE.read_text().splitlines()
                if p.strip() and not p.startswith("#")]

    def ignored(path: str) -> bool:
        result = False
        for pattern in patterns:
            negate = pattern.startswith("!")
            pattern = pattern.lstrip("!").strip("/")
            parts = path.split("/")
            prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
            if any(fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(p, pattern.removeprefix("**/"))
                   or fnmatch.fnmatch(p.split("/")[-1], pattern.removeprefix("**/"))
                   and pattern.startswith("**/") for p in prefixes):
                result = not negate
        return result

    for path in (".venv/bin/python", ".venv-ls/bin/label-studio", "tests/browser/node_modules/x",
                 ".test-artifacts/a.png", "bench/results/r.json", "vrshq.egg-info/PKG-INFO",
                 "studio/login.json", "demo-out/a.mp4", ".env", ".git/HEAD"):
        assert ignored(path), f".dockerignore lets {path} into the build context"
    for path in ("pyproject.toml", "README.md", "scripts/setup.sh", "vrshq/cli/__init__.py",
                 "backend/config.py", "backend/configs/video_text_prompt.xml", "plugins/registry.py"):
        assert (ROOT / path).exists(), path
        assert not ignored(path), f".dockerignore drops {path}, which the image needs"
