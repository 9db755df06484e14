"""Consistency checks on deploy/ that a schema cannot make (run by validate.sh, in its venv).

Each check prints one line, `ok    WHAT` or `FAIL  WHAT: the problems`; a check that cannot read
its files fails with the reason. The exit status is the number of checks that failed. Usage: python checks.py REPO_DIR
"""

import re
import sys
import traceback
from pathlib import Path

import hcl2
import yaml

repo = Path(sys.argv[1])
deploy = repo / "deploy"
kube = deploy / "kubernetes"

# Flags assumed to exist although host/src does not declare them yet (none now).
PENDING_FLAGS = set()

# The hotswap arguments each section finds, for the flag check at the end.
used = {}


def note_flags(where, words):
    for w in words:
        if isinstance(w, str) and re.match(r"^--[a-z]", w):
            used.setdefault(w.split("=", 1)[0], set()).add(where)


def docs(path):
    with open(path) as f:
        return [d for d in yaml.safe_load_all(f) if d]


def one(path, kind):
    found = [d for d in docs(path) if d.get("kind") == kind]
    if len(found) != 1:
        raise ValueError(f"{path.name}: expected one {kind}, found {len(found)}")
    return found[0]


def flag_value(args, flag):
    """The value after `flag` in an argument list, or None."""
    for i, a in enumerate(args[:-1]):
        if a == flag:
            return args[i + 1]
    return None


def under(path, mounts):
    """The volume mount that holds `path`, or None."""
    for m in mounts:
        base = m["mountPath"].rstrip("/")
        if path == base or path.startswith(base + "/"):
            return m
    return None


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def unquote(v):
    """python-hcl2 keeps the quotes of string literals."""
    if isinstance(v, str) and len(v) >= 2 and v[0] == v[-1] == '"':
        return v[1:-1]
    return v


def rollout_default(var):
    """A default value rollout.sh gives a variable: `VAR=${VAR:-x}`, or `    VAR='x'` (set when
    unset)."""
    text = (kube / "rollout.sh").read_text()
    found = re.search(rf"^{var}=\$\{{{var}:-([^}}]*)\}}", text, re.M) or re.search(
        rf"^\s+{var}='?([^'\n]*)'?$", text, re.M
    )
    return found.group(1) if found else None


def kubernetes():
    """kubernetes: StatefulSet, Service, kustomization.yaml and rollout.sh agree (module, state,
    socket, probes, ports, labels)"""
    sts = one(kube / "statefulset.yaml", "StatefulSet")
    svc = one(kube / "service.yaml", "Service")
    kust = yaml.safe_load((kube / "kustomization.yaml").read_text())
    pod = sts["spec"]["template"]
    spec = pod["spec"]
    c = spec["containers"][0]
    args = c["command"] + c["args"]
    mounts = c.get("volumeMounts", [])
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    claims = {t["metadata"]["name"] for t in sts["spec"].get("volumeClaimTemplates", [])}
    ports = {q["name"]: q["containerPort"] for q in c.get("ports", [])}
    labels = pod["metadata"]["labels"]
    p = []
    if args[:2] != ["hotswap", "run"]:
        p.append(f"the container runs {args[:2]}, not hotswap run")
    for flag in ("--watch", "--durable"):
        if flag not in args:
            p.append(f"no {flag}")
    module = args[2]
    m = under(module, mounts)
    generators = kust.get("configMapGenerator", [])
    cm_names = [g["name"] for g in generators]
    if not m or "configMap" not in volumes.get(m["name"], {}):
        p.append(f"the module {module} is not on a ConfigMap volume")
    else:
        if m.get("subPath"):
            p.append("the ConfigMap is mounted with subPath, which never sees an update")
        cm = volumes[m["name"]]["configMap"]["name"]
        if cm not in cm_names:
            p.append(f"ConfigMap {cm} is not the one kustomization.yaml makes ({cm_names})")
        key = module[len(m["mountPath"].rstrip("/")) + 1 :]
        keys = [f.split("=")[0] for g in generators for f in g.get("files", [])]
        if key not in keys:
            p.append(f"key {key} is not in the generated ConfigMap ({keys})")
    if not all(g.get("options", {}).get("disableNameSuffixHash") for g in generators):
        p.append("a ConfigMap name with a hash suffix restarts every pod at each new module")
    state = flag_value(args, "--state-dir")
    sm = under(state or "", mounts)
    if not sm or sm["name"] not in claims:
        p.append(f"--state-dir {state} is not on a volumeClaimTemplate")
    control = flag_value(args, "--control")
    if not control or not under(control, mounts):
        p.append(f"--control {control} is not on a volume")
    probes = []
    for what in ("startupProbe", "readinessProbe", "livenessProbe", "preStop"):
        ex = c.get("lifecycle", {}).get(what) if what == "preStop" else c.get(what)
        cmd = (ex or {}).get("exec", {}).get("command", [])
        probes += cmd
        want = ["stop"] if what == "preStop" else ["status", "--json"]
        if cmd[:1] != ["hotswap"] or not all(w in cmd for w in want):
            p.append(f"{what} is not `hotswap {' '.join(want)}`: {cmd}")
        elif flag_value(cmd, "--control") != control:
            p.append(f"{what} asks {flag_value(cmd, '--control')}, the host listens on {control}")
    for flag, port in (("--http", "http"), ("--metrics", "metrics")):
        addr = flag_value(args, flag) or ""
        if not addr.endswith(f":{ports.get(port)}"):
            p.append(f"{flag} {addr} is not on containerPort {port} ({ports.get(port)})")
    ann = pod["metadata"].get("annotations", {})
    if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != str(ports.get("metrics")):
        p.append("the prometheus.io annotations do not name the metrics port")
    if sts["spec"]["serviceName"] != svc["metadata"]["name"] or svc["spec"].get("clusterIP") != "None":
        p.append("the StatefulSet's serviceName is not the headless Service")
    if not matches(svc["spec"]["selector"], labels):
        p.append("the Service's selector does not match the pod labels")
    if not matches(sts["spec"]["selector"]["matchLabels"], labels):
        p.append("the StatefulSet's selector does not match the pod labels")
    if not spec.get("terminationGracePeriodSeconds"):
        p.append("no terminationGracePeriodSeconds")
    for r in kust.get("resources", []):
        if not (kube / r).is_file():
            p.append(f"kustomization.yaml lists {r}, which does not exist")
    # rollout.sh's defaults must fit the manifests.
    if rollout_default("CONTROL") != control:
        p.append(f"rollout.sh CONTROL {rollout_default('CONTROL')} is not the host's {control}")
    if rollout_default("CONTAINER") != c["name"]:
        p.append(f"rollout.sh CONTAINER {rollout_default('CONTAINER')} is not {c['name']}")
    staging = rollout_default("STAGING") or ""
    sm = under(staging, mounts)
    if not sm or sm is m or sm.get("readOnly"):
        p.append(f"rollout.sh STAGING {staging} is not on a writable volume apart from the module's")
    selector = rollout_default("SELECTOR") or ""
    if not matches(dict(kv.split("=", 1) for kv in selector.split(",") if "=" in kv), labels):
        p.append(f"rollout.sh SELECTOR {selector} does not match the pod labels")
    if rollout_default("CONFIGMAP") not in cm_names:
        p.append(f"rollout.sh CONFIGMAP {rollout_default('CONFIGMAP')} is not {cm_names}")
    note_flags("statefulset.yaml", args + probes)
    note_flags("rollout.sh RELOAD_ARGS", (rollout_default("RELOAD_ARGS") or "").split())
    return p


def servicemonitor():
    """kubernetes/servicemonitor.yaml (commented out): parses uncommented, selects the Service,
    scrapes its metrics port (no schema to check it against: a CRD)"""
    svc = one(kube / "service.yaml", "Service")
    text = (kube / "servicemonitor.yaml").read_text().splitlines()
    start = next((i for i, line in enumerate(text) if line.startswith("# apiVersion:")), None)
    if start is None:
        return ["no commented-out `# apiVersion:` line"]
    monitor = yaml.safe_load("\n".join(line[2:] if line.startswith("# ") else line.lstrip("#") for line in text[start:]))
    p = []
    if (monitor.get("apiVersion"), monitor.get("kind")) != ("monitoring.coreos.com/v1", "ServiceMonitor"):
        p.append("not a monitoring.coreos.com/v1 ServiceMonitor")
    svc_ports = {q["name"] for q in svc["spec"]["ports"]}
    for e in monitor.get("spec", {}).get("endpoints", []):
        if e.get("port") not in svc_ports:
            p.append(f"endpoint port {e.get('port')} is not a Service port ({sorted(svc_ports)})")
    if not matches(monitor["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"]):
        p.append("its selector does not match the Service's labels")
    return p


def nomad():
    """nomad/hotswap.nomad.hcl: parses as HCL; a template with change_mode "script" runs `hotswap
    reload`; the state on a volume; a script check runs `hotswap status --json`"""
    with open(deploy / "nomad" / "hotswap.nomad.hcl") as f:
        parsed = hcl2.load(f)
    (job,) = [list(j.values())[0] for j in parsed["job"]]
    (group,) = [list(g.values())[0] for g in job["group"]]
    (task,) = [list(t.values())[0] for t in group["task"]]
    run_args = [unquote(a) for a in task["config"][0]["args"]]
    note_flags("hotswap.nomad.hcl", run_args)
    p = []
    if run_args[:1] != ["run"] or "--durable" not in run_args:
        p.append(f"the task does not run `hotswap run ... --durable`: {run_args[:3]}")
    socket = flag_value(run_args, "--control")
    volumes = {list(v.keys())[0].strip('"') for v in group.get("volume", [])}
    mounts = {unquote(v["volume"]): unquote(v["destination"]) for v in task.get("volume_mount", [])}
    state = flag_value(run_args, "--state-dir") or ""
    if not any(vol in volumes and state.startswith(dest) for vol, dest in mounts.items()):
        p.append(f"--state-dir {state} is not on a group volume")
    scripts = [t for t in task.get("template", []) if unquote(t.get("change_mode")) == "script"]
    if len(scripts) != 1:
        p.append('no template with change_mode = "script"')
    else:
        t = scripts[0]
        cs = t["change_script"][0]
        if not unquote(cs["command"]).endswith("/hotswap"):
            p.append(f"the change_script runs {cs['command']}")
        cs_args = cs["args"]
        # A list, or an expression such as concat([...], var.reload_args): its literals.
        cs_args = [unquote(a) for a in cs_args] if isinstance(cs_args, list) else re.findall(r'"([^"]*)"', cs_args)
        note_flags("hotswap.nomad.hcl", cs_args)
        if cs_args[:1] != ["reload"] or flag_value(cs_args, "--control") != socket:
            p.append(f"the change_script is not `hotswap reload ... --control {socket}`: {cs_args}")
        dest = "/" + unquote(t["destination"])
        if cs_args[1:2] != [dest] or run_args[1:2] != [dest]:
            p.append(f"the template writes {dest}, run reads {run_args[1:2]}, reload sends {cs_args[1:2]}")
    status = [ck for s in task.get("service", []) for ck in s.get("check", []) if unquote(ck.get("type")) == "script"]
    if not status:
        p.append("no script check")
    for ck in status:
        ck_args = [unquote(a) for a in ck["args"]]
        note_flags("hotswap.nomad.hcl", ck_args)
        if ck_args[:2] != ["status", "--json"] or flag_value(ck_args, "--control") != socket:
            p.append(f"the check is not `hotswap status --json --control {socket}`: {ck_args}")
    for v in parsed.get("variable", []):
        for name, body in v.items():
            if name.strip('"') == "reload_args":
                note_flags("hotswap.nomad.hcl", [unquote(a) for a in body.get("default", [])])
    return p


def systemd():
    """systemd/hotswap.service: ExecStart run, ExecReload reload, ExecStop stop, on one control
    socket; StateDirectory; hardening"""
    unit = (deploy / "systemd" / "hotswap.service").read_text().replace("\\\n", " ")
    execs = {}
    for line in unit.splitlines():
        k = re.match(r"^(Exec\w+)=-?(.*)$", line)
        if k:
            execs[k.group(1)] = k.group(2).split()
    p = []
    for key, sub in (("ExecStart", "run"), ("ExecReload", "reload"), ("ExecStop", "stop")):
        words = execs.get(key, [])
        if words[:1] != ["/usr/local/bin/hotswap"] or words[1:2] != [sub]:
            p.append(f"{key} is not `/usr/local/bin/hotswap {sub}`")
        note_flags("hotswap.service", words)
    sockets = {flag_value(w, "--control") for w in execs.values()}
    if len(sockets) != 1:
        p.append(f"the Exec lines name different control sockets: {sockets}")
    settings = {line.split("=", 1)[0] for line in unit.splitlines() if re.match(r"^[A-Z]\w+=", line)}
    for key in ("StateDirectory", "NoNewPrivileges", "ProtectSystem"):
        if key not in settings:
            p.append(f"no {key}=")
    if "MemoryDenyWriteExecute" in settings:
        p.append("MemoryDenyWriteExecute= breaks wasmtime's compiled code")
    return p


def hotswap_flags():
    """Every long flag the clap definitions in host/src declare: `#[arg(long = "x")]`, or
    `#[arg(long ...)]` on the field that follows (its name in kebab case)."""
    flags = set()
    for rs in (repo / "host" / "src").rglob("*.rs"):
        pending = False
        for line in rs.read_text().splitlines():
            s = line.strip()
            if s.startswith("#[arg(") and re.search(r"\blong\b", s):
                named = re.search(r'\blong\s*=\s*"([^"]+)"', s)
                if named:
                    flags.add("--" + named.group(1))
                else:
                    pending = True
                continue
            field = re.match(r"pub\s+(\w+)\s*:", s)
            if pending and field:
                flags.add("--" + field.group(1).replace("_", "-"))
                pending = False
    return flags


def flags():
    """hotswap flags: every one used in deploy/ is declared in host/src"""
    known = hotswap_flags()
    if len(known) < 10:
        return [f"found only {len(known)} flags in host/src: have the clap definitions moved?"]
    unknown = {f: w for f, w in used.items() if f not in known and f not in PENDING_FLAGS}
    p = [f"{f} (in {', '.join(sorted(w))}) is not a flag of hotswap" for f, w in sorted(unknown.items())]
    pending = sorted(f for f in used if f in PENDING_FLAGS and f not in known)
    if pending and not p:
        flags.__doc__ = f"hotswap flags: the {len(used)} used in deploy/ are declared in host/src, except {', '.join(pending)}, assumed (being added)"
    elif not p:
        flags.__doc__ = f"hotswap flags: the {len(used)} used in deploy/ are declared in host/src"
    return p


def dockerfile():
    """Dockerfile: builds the host's package on the workspace's rust-version (not built here)"""
    text = (deploy / "Dockerfile").read_text()
    package = re.search(r'^name\s*=\s*"([^"]+)"', (repo / "host" / "Cargo.toml").read_text(), re.M).group(1)
    rust = re.search(r'^rust-version\s*=\s*"([^"]+)"', (repo / "Cargo.toml").read_text(), re.M).group(1)
    image = re.search(r"^FROM rust:(\d+\.\d+)", text, re.M)
    p = []
    if f"-p {package}" not in text:
        p.append(f"does not build package {package} (host/Cargo.toml)")
    if not image or image.group(1) != rust:
        p.append(f"the rust image {image and image.group(1)} is not the workspace rust-version {rust}")
    return p


failures = 0
for section in (kubernetes, servicemonitor, nomad, systemd, flags, dockerfile):
    name = " ".join(section.__doc__.split())
    try:
        problems = section()
        name = " ".join(section.__doc__.split())
    except Exception as e:  # noqa: BLE001 - any error is that check's failure
        ours = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == __file__]
        problems = [f"{type(e).__name__}: {e}".splitlines()[0] + f" (checks.py line {ours[-1].lineno})"]
    if problems:
        failures += 1
        print(f"FAIL  {name}: " + "; ".join(problems))
    else:
        print(f"ok    {name}")
sys.exit(failures)
