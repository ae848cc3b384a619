//! Offline checks of the Kubernetes base in `k8s/`.
//!
//! Nothing else exercises the manifests before a real rollout, and a field of
//! the wrong type or a misspelled key is only reported by the API server. These
//! tests render the base with `kubectl kustomize` and validate every object
//! against the Kubernetes 1.32 schemas with `kubernetes-validate --strict`, no
//! cluster needed. Missing tools fail the tests instead of skipping them:
//! `scripts/install-k8s-tools.sh` installs what is needed.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, bail};

/// The Kubernetes version whose API schemas the manifests must satisfy.
const KUBERNETES_VERSION: &str = "1.32.0";

/// Printed whenever a tool is missing.
const INSTALL_HINT: &str = "install the tools with scripts/install-k8s-tools.sh \
     (kubectl 1.32+ with built-in kustomize, and \
     `pip install kubernetes-validate==1.37.0`)";

/// A Deployment with a `REPLICAS` placeholder, to show what the validator
/// accepts and what it rejects.
const DEPLOYMENT_TEMPLATE: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: validator-probe
spec:
  replicas: REPLICAS
  selector:
    matchLabels:
      app: validator-probe
  template:
    metadata:
      labels:
        app: validator-probe
    spec:
      containers:
        - name: probe
          image: example.invalid/probe:1
";

/// Renders `k8s/` and checks that kubernetes-validate accepts every object,
/// and that the render holds the workloads the services and the NATS cluster
/// are expected to run as.
#[test]
fn kustomize_renders_and_validates_offline() -> Result<()> {
    let rendered = render_base()?;
    let documents = parse_documents(&rendered)?;

    let file = TempFile::write("rendered", &rendered)?;
    let validator = Validator::find()?;
    let output = validator.run(file.path())?;
    let report = describe(&output);
    if !output.status.success() {
        bail!("kubernetes-validate rejected the rendered base:\n{report}");
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    // An object whose apiVersion/kind has no schema is only a warning with
    // exit status 0, so a typo there would otherwise pass unnoticed.
    if stdout
        .lines()
        .any(|line| line.starts_with("WARN") || line.starts_with("ERROR"))
    {
        bail!("kubernetes-validate did not validate every object:\n{report}");
    }
    let passed = stdout
        .lines()
        .filter(|line| line.contains(" passed for resource "))
        .count();
    if passed != documents.len() {
        bail!(
            "kubernetes-validate passed {passed} objects, but the render has {}:\n{report}",
            documents.len()
        );
    }

    let mut deployments: Vec<&str> = documents
        .iter()
        .filter(|doc| doc.kind == "Deployment")
        .map(|doc| doc.name.as_str())
        .collect();
    deployments.sort_unstable();
    let expected = ["ingest", "ledger-projector", "reconciler", "ws-edge"];
    if deployments != expected {
        bail!("expected Deployments {expected:?}, rendered {deployments:?}");
    }

    let nats = documents
        .iter()
        .find(|doc| doc.kind == "StatefulSet" && doc.name == "nats")
        .context("the render has no StatefulSet named nats")?;
    if nats.replicas != Some(3) {
        bail!(
            "StatefulSet nats must run 3 replicas for R3 streams, has {:?}",
            nats.replicas
        );
    }

    for (kind, name) in [
        ("ConfigMap", "paytrack-config"),
        ("ConfigMap", "nats-config"),
        ("Service", "nats"),
        ("Service", "nats-headless"),
        ("Service", "ingest"),
        ("Service", "ws-edge"),
    ] {
        if !documents.iter().any(|doc| doc.kind == kind && doc.name == name) {
            bail!("the render has no {kind} named {name}");
        }
    }

    // Operators create paytrack-secrets; the base must never ship a default.
    if let Some(secret) = documents.iter().find(|doc| doc.kind == "Secret") {
        bail!("the base must not create Secrets, found {}", secret.name);
    }
    Ok(())
}

/// Shows that the validator is real: the same Deployment passes with a valid
/// `replicas`, fails with a string where an integer belongs, and fails with an
/// unknown field (which only `--strict` catches).
#[test]
fn validator_rejects_a_broken_manifest() -> Result<()> {
    let validator = Validator::find()?;

    let valid = TempFile::write("valid", &DEPLOYMENT_TEMPLATE.replace("REPLICAS", "1"))?;
    let output = validator.run(valid.path())?;
    if !output.status.success() {
        bail!(
            "kubernetes-validate rejected a valid Deployment:\n{}",
            describe(&output)
        );
    }

    let wrong_type = TempFile::write("wrong-type", &DEPLOYMENT_TEMPLATE.replace("REPLICAS", "\"three\""))?;
    let output = validator.run(wrong_type.path())?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if output.status.success() || !stdout.contains("spec.replicas") {
        bail!(
            "kubernetes-validate should reject `replicas: \"three\"`:\n{}",
            describe(&output)
        );
    }

    let unknown_field = TempFile::write(
        "unknown-field",
        &DEPLOYMENT_TEMPLATE.replace("REPLICAS", "1\n  replica: 2"),
    )?;
    let output = validator.run(unknown_field.path())?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if output.status.success() || !stdout.contains("'replica' was unexpected") {
        bail!(
            "kubernetes-validate --strict should reject the unknown field `replica`:\n{}",
            describe(&output)
        );
    }
    Ok(())
}

/// The reconciler decides transitions with the code of one version only: during an
/// upgrade the old pods must stop before new ones start (ARCHITECTURE.md: two code
/// versions never decide side by side), which is the `Recreate` strategy. The
/// default `RollingUpdate` would run both.
#[test]
fn the_reconciler_never_runs_two_versions_side_by_side() -> Result<()> {
    let rendered = render_base()?;
    let reconciler = rendered
        .split("\n---\n")
        .find(|doc| {
            top_level_value(doc, "kind").as_deref() == Some("Deployment")
                && nested_value(doc, "metadata", "name").as_deref() == Some("reconciler")
        })
        .context("the render has no Deployment named reconciler")?;
    let strategy = value_at(reconciler, &["spec", "strategy", "type"]);
    if strategy.as_deref() != Some("Recreate") {
        bail!("the reconciler's update strategy must be Recreate, is {strategy:?} (unset: RollingUpdate)");
    }
    if reconciler.contains("rollingUpdate:") {
        bail!("the reconciler must not configure a rolling update");
    }
    Ok(())
}

/// Streams and buckets are created by the layout step as the NATS admin, never by a
/// service: the base runs it as a Job of the image's `paytrack layout`, with the
/// admin's password and the shared settings (replicas, duplicate windows).
#[test]
fn the_layout_is_applied_by_a_job_as_the_nats_admin() -> Result<()> {
    let rendered = render_base()?;
    let job = rendered
        .split("\n---\n")
        .find(|doc| {
            top_level_value(doc, "kind").as_deref() == Some("Job")
                && nested_value(doc, "metadata", "name").as_deref() == Some("paytrack-layout")
        })
        .context("the render has no Job named paytrack-layout")?;
    for expected in [
        "/usr/local/bin/paytrack",
        "- layout",
        "name: PAYTRACK_NATS_ADMIN_PASSWORD",
        "name: paytrack-nats-users",
        "key: admin",
        "name: paytrack-config",
    ] {
        if !job.contains(expected) {
            bail!("the layout Job lacks `{expected}`:\n{job}");
        }
    }
    // No service is given the admin's password.
    for doc in rendered.split("\n---\n") {
        if top_level_value(doc, "kind").as_deref() == Some("Deployment") && doc.contains("key: admin") {
            bail!(
                "Deployment {:?} is given the NATS admin's password",
                nested_value(doc, "metadata", "name")
            );
        }
    }
    Ok(())
}

/// The value at `path` of a block-style YAML document (two-space indents, as
/// kustomize writes them), e.g. `["spec", "strategy", "type"]`.
fn value_at(document: &str, path: &[&str]) -> Option<String> {
    let mut scope: Vec<&str> = document.lines().collect();
    for (depth, key) in path.iter().enumerate() {
        let indent = "  ".repeat(depth);
        if depth + 1 == path.len() {
            return scope.iter().find_map(|line| {
                line.strip_prefix(&indent)
                    .filter(|rest| !rest.starts_with(' '))
                    .and_then(|rest| scalar(rest, key))
            });
        }
        let header = format!("{indent}{key}:");
        let inner = format!("{indent}  ");
        let start = scope.iter().position(|line| *line == header)? + 1;
        scope = scope[start..]
            .iter()
            .take_while(|line| line.is_empty() || line.starts_with(&inner))
            .copied()
            .collect();
    }
    None
}

/// Runs `kubectl kustomize k8s/` and returns the rendered YAML.
fn render_base() -> Result<String> {
    let root = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let base = root.join("k8s");
    let output = match Command::new("kubectl").arg("kustomize").arg(&base).output() {
        Ok(output) => output,
        Err(err) if err.kind() == ErrorKind::NotFound => {
            bail!("kubectl not found on PATH; {INSTALL_HINT}")
        }
        Err(err) => return Err(err).context("could not run kubectl"),
    };
    if !output.status.success() {
        bail!("kubectl kustomize {} failed:\n{}", base.display(), describe(&output));
    }
    String::from_utf8(output.stdout).context("kubectl kustomize printed invalid UTF-8")
}

/// How kubernetes-validate is started on this machine: its console script,
/// or the Python module when the script is not on PATH.
struct Validator {
    program: &'static str,
    leading_args: &'static [&'static str],
}

impl Validator {
    const CANDIDATES: [Validator; 2] = [
        Validator {
            program: "kubernetes-validate",
            leading_args: &[],
        },
        Validator {
            program: "python3",
            leading_args: &["-m", "kubernetes_validate"],
        },
    ];

    fn find() -> Result<Self> {
        for candidate in Self::CANDIDATES {
            let works = Command::new(candidate.program)
                .args(candidate.leading_args)
                .arg("--version")
                .output()
                .is_ok_and(|output| output.status.success());
            if works {
                return Ok(candidate);
            }
        }
        bail!(
            "kubernetes-validate not found (tried `kubernetes-validate` on PATH and \
             `python3 -m kubernetes_validate`); {INSTALL_HINT}"
        )
    }

    /// `kubernetes-validate -k 1.32.0 --strict <file>`: strict mode rejects
    /// fields the schema does not define, not just wrong types.
    fn run(&self, manifest: &Path) -> Result<Output> {
        Command::new(self.program)
            .args(self.leading_args)
            .args(["-k", KUBERNETES_VERSION, "--strict"])
            .arg(manifest)
            .output()
            .with_context(|| format!("could not run {}", self.program))
    }
}

/// The parts of one rendered object that the tests look at.
struct Document {
    kind: String,
    name: String,
    replicas: Option<u32>,
}

/// Splits a multi-document render and reads each object's kind, name and
/// `spec.replicas`. kustomize writes block-style YAML with two-space indents,
/// which is all this has to understand.
fn parse_documents(yaml: &str) -> Result<Vec<Document>> {
    let mut documents = Vec::new();
    for (index, text) in yaml.split("\n---\n").enumerate() {
        if text.trim().is_empty() {
            continue;
        }
        let kind = top_level_value(text, "kind").with_context(|| format!("document {index} has no kind:\n{text}"))?;
        let name = nested_value(text, "metadata", "name")
            .with_context(|| format!("document {index} has no metadata.name:\n{text}"))?;
        let replicas = match nested_value(text, "spec", "replicas") {
            Some(value) => Some(
                value
                    .parse()
                    .with_context(|| format!("{kind} {name} has replicas {value:?}"))?,
            ),
            None => None,
        };
        documents.push(Document { kind, name, replicas });
    }
    if documents.is_empty() {
        bail!("kubectl kustomize rendered no objects");
    }
    Ok(documents)
}

/// The value of `key:` at the top level of a document.
fn top_level_value(document: &str, key: &str) -> Option<String> {
    document.lines().find_map(|line| scalar(line, key))
}

/// The value of `  key:` directly inside the top-level `parent:` mapping.
fn nested_value(document: &str, parent: &str, key: &str) -> Option<String> {
    let header = format!("{parent}:");
    document
        .lines()
        .skip_while(|line| *line != header)
        .skip(1)
        .take_while(|line| line.is_empty() || line.starts_with(' '))
        .find_map(|line| line.strip_prefix("  ").and_then(|rest| scalar(rest, key)))
}

/// `value` if `line` is exactly `key: value` (no indentation), unquoted.
fn scalar(line: &str, key: &str) -> Option<String> {
    let value = line.strip_prefix(key)?.strip_prefix(':')?.trim();
    let value = value.trim_matches(|c| c == '"' || c == '\'');
    (!value.is_empty()).then(|| value.to_owned())
}

/// A status line plus both output streams, for failure messages.
fn describe(output: &Output) -> String {
    format!(
        "{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// A file in the system temp directory, removed when dropped. The name holds
/// the process id and a per-test label, so parallel tests and concurrent runs
/// do not collide.
struct TempFile(PathBuf);

impl TempFile {
    fn write(label: &str, contents: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("paytrack-k8s-{}-{label}.yaml", std::process::id()));
        fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
        Ok(Self(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// The rendered base as parsed objects, for the consistency checks below.
fn rendered_objects() -> Result<Vec<serde_norway::Value>> {
    let rendered = render_base()?;
    let mut objects = Vec::new();
    for document in serde_norway::Deserializer::from_str(&rendered) {
        let value: serde_norway::Value = serde::Deserialize::deserialize(document).context("parse the render")?;
        if !value.is_null() {
            objects.push(value);
        }
    }
    Ok(objects)
}

/// The object of `kind` named `name`.
fn object<'a>(objects: &'a [serde_norway::Value], kind: &str, name: &str) -> Result<&'a serde_norway::Value> {
    objects
        .iter()
        .find(|o| o["kind"].as_str() == Some(kind) && o["metadata"]["name"].as_str() == Some(name))
        .with_context(|| format!("the render has no {kind} named {name}"))
}

/// Every object of `kind`.
fn of_kind<'a>(objects: &'a [serde_norway::Value], kind: &'a str) -> impl Iterator<Item = &'a serde_norway::Value> {
    objects.iter().filter(move |o| o["kind"].as_str() == Some(kind))
}

/// An object's name, for messages.
fn name_of(object: &serde_norway::Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or("?")
}

/// The kinds whose pods the base runs, with a pod template at `spec.template`.
const WORKLOAD_KINDS: [&str; 3] = ["Deployment", "StatefulSet", "Job"];

/// Every workload's pod template labels, with its kind and name.
fn pod_templates(objects: &[serde_norway::Value]) -> Vec<(&str, &str, &serde_norway::Value)> {
    objects
        .iter()
        .filter(|o| o["kind"].as_str().is_some_and(|k| WORKLOAD_KINDS.contains(&k)))
        .map(|o| (o["kind"].as_str().unwrap_or("?"), name_of(o), &o["spec"]["template"]))
        .collect()
}

/// Whether a label selector's `matchLabels` and `matchExpressions` (`In` only, as the
/// base writes them) select a pod with `labels`.
fn selects(selector: &serde_norway::Value, labels: &serde_norway::Value) -> bool {
    let labels_match = selector["matchLabels"]
        .as_mapping()
        .is_none_or(|wanted| wanted.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let expressions_match = selector["matchExpressions"].as_sequence().is_none_or(|expressions| {
        expressions.iter().all(|e| {
            let value = e["key"].as_str().and_then(|key| labels.get(key));
            match e["operator"].as_str() {
                Some("In") => e["values"]
                    .as_sequence()
                    .is_some_and(|values| value.is_some_and(|v| values.contains(v))),
                _ => false,
            }
        })
    });
    labels_match && expressions_match
}

/// The value `name` is given in `container`'s `env`, if written there as a value.
fn env_value<'a>(container: &'a serde_norway::Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_sequence()?
        .iter()
        .find(|e| e["name"].as_str() == Some(name))
        .and_then(|e| e["value"].as_str())
}

/// Every Deployment is probed for readiness on `/readyz` (which is 503 while NATS,
/// or PostgreSQL for the services that use it, is unreachable) and for liveness,
/// and has a PodDisruptionBudget that selects its pods and keeps one of them.
#[test]
fn every_deployment_has_readiness_liveness_and_a_disruption_budget() -> Result<()> {
    let objects = rendered_objects()?;
    let budgets: Vec<_> = of_kind(&objects, "PodDisruptionBudget").collect();
    for deployment in of_kind(&objects, "Deployment") {
        let name = name_of(deployment);
        let pod = &deployment["spec"]["template"];
        for container in pod["spec"]["containers"].as_sequence().context("containers")? {
            let readiness = &container["readinessProbe"]["httpGet"];
            if readiness["path"].as_str() != Some("/readyz") {
                bail!("Deployment {name}: container without a readinessProbe on /readyz: {readiness:?}");
            }
            if container["livenessProbe"]["httpGet"]["path"].as_str() != Some("/healthz") {
                bail!("Deployment {name}: container without a livenessProbe on /healthz");
            }
            let port = &readiness["port"];
            let declared = container["ports"]
                .as_sequence()
                .is_some_and(|ports| ports.iter().any(|p| &p["name"] == port || &p["containerPort"] == port));
            if !declared {
                bail!("Deployment {name}: the readiness probe's port {port:?} is not a container port");
            }
        }
        let budget = budgets
            .iter()
            .find(|b| selects(&b["spec"]["selector"], &pod["metadata"]["labels"]))
            .with_context(|| format!("Deployment {name} has no PodDisruptionBudget"))?;
        let keeps_one = budget["spec"]["minAvailable"].as_u64().is_some_and(|n| n >= 1)
            || budget["spec"]["maxUnavailable"].as_u64() == Some(1);
        if !keeps_one {
            bail!(
                "PodDisruptionBudget {} must keep a pod of {name} running",
                name_of(budget)
            );
        }
    }
    Ok(())
}

/// The NATS cluster runs what chaos tests prove: three servers, each fsyncing every
/// write (`sync_interval: always`), and the layout Job gives every stream and bucket
/// three replicas, the same count the services verify (`paytrack-config`).
#[test]
fn nats_runs_three_servers_with_the_production_sync_and_the_layout_asks_for_r3() -> Result<()> {
    let objects = rendered_objects()?;
    let nats = object(&objects, "StatefulSet", "nats")?;
    let servers = nats["spec"]["replicas"].as_u64();
    if servers != Some(3) {
        bail!("StatefulSet nats runs {servers:?} servers, not 3");
    }
    let config = object(&objects, "ConfigMap", "nats-config")?["data"]["nats.conf"]
        .as_str()
        .context("nats-config has no nats.conf")?;
    let jetstream = config
        .split("jetstream {")
        .nth(1)
        .and_then(|rest| rest.split("\n    }").next())
        .context("nats.conf has no jetstream block")?;
    let sync: Vec<&str> = jetstream
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.strip_prefix("sync_interval:"))
        .map(str::trim)
        .collect();
    if sync != ["always"] {
        bail!("nats.conf's jetstream block must set `sync_interval: always` once, sets {sync:?}");
    }

    let job = object(&objects, "Job", "paytrack-layout")?;
    let layout = &job["spec"]["template"]["spec"]["containers"][0];
    let replicas = env_value(layout, "PAYTRACK_NATS_REPLICAS");
    if replicas != Some("3") {
        bail!("the layout Job must set PAYTRACK_NATS_REPLICAS=3, sets {replicas:?}");
    }
    let verified = object(&objects, "ConfigMap", "paytrack-config")?["data"]["PAYTRACK_NATS_REPLICAS"].as_str();
    if verified != replicas {
        bail!("services verify {verified:?} replicas, the layout Job lays out {replicas:?}");
    }
    let replicas: u64 = replicas.unwrap_or_default().parse()?;
    if Some(replicas) > servers {
        bail!("{replicas} stream replicas cannot be placed on {servers:?} servers");
    }
    Ok(())
}

/// Nothing lets two reconciler versions run together: `Recreate`, no rolling-update
/// settings and no autoscaler on it. The other services roll without going below
/// their count (maxUnavailable 0) or use the default rolling update.
#[test]
fn nothing_lets_two_reconciler_versions_overlap() -> Result<()> {
    let objects = rendered_objects()?;
    let reconciler = object(&objects, "Deployment", "reconciler")?;
    let strategy = &reconciler["spec"]["strategy"];
    if strategy["type"].as_str() != Some("Recreate") {
        bail!("the reconciler's strategy must be Recreate: {strategy:?}");
    }
    if !strategy["rollingUpdate"].is_null() {
        bail!("the reconciler must not set rollingUpdate (maxSurge would overlap versions)");
    }
    if let Some(hpa) = of_kind(&objects, "HorizontalPodAutoscaler")
        .find(|h| h["spec"]["scaleTargetRef"]["name"].as_str() == Some("reconciler"))
    {
        bail!("HorizontalPodAutoscaler {} scales the reconciler", name_of(hpa));
    }
    let running_reconciler: Vec<&str> = of_kind(&objects, "Deployment")
        .filter(|d| {
            d["spec"]["template"]["spec"]["containers"]
                .as_sequence()
                .is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c["command"].as_sequence().is_some_and(|cmd| {
                            cmd.iter()
                                .any(|a| a.as_str() == Some("/usr/local/bin/paytrack-reconciler"))
                        })
                    })
                })
        })
        .map(name_of)
        .collect();
    if running_reconciler != ["reconciler"] {
        bail!("only the reconciler Deployment may run the reconciler binary: {running_reconciler:?}");
    }
    Ok(())
}

/// The edge drains before it goes: a preStop wait takes it out of the Service while
/// it still serves, then SIGTERM closes sessions with 1012 and waits for clients at
/// most the drain timeout; the grace period must cover both.
#[test]
fn the_edge_drains_within_its_grace_period() -> Result<()> {
    let objects = rendered_objects()?;
    let edge = object(&objects, "Deployment", "ws-edge")?;
    let pod = &edge["spec"]["template"]["spec"];
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .context("ws-edge sets no terminationGracePeriodSeconds")?;
    let container = &pod["containers"][0];
    let pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .context("ws-edge has no preStop sleep")?;
    if pre_stop == 0 {
        bail!("ws-edge's preStop wait must be longer than 0 s");
    }
    let drain_ms: u64 = object(&objects, "ConfigMap", "paytrack-config")?["data"]["PAYTRACK_EDGE_DRAIN_TIMEOUT_MS"]
        .as_str()
        .context("paytrack-config sets no PAYTRACK_EDGE_DRAIN_TIMEOUT_MS")?
        .parse()?;
    if drain_ms == 0 {
        bail!("the edge's drain timeout must be longer than 0");
    }
    let needed_ms = pre_stop * 1000 + drain_ms;
    if grace * 1000 <= needed_ms {
        bail!("ws-edge's grace period {grace} s does not cover preStop {pre_stop} s + drain {drain_ms} ms");
    }
    Ok(())
}

/// ingest and ws-edge scale on CPU: each has an autoscaler that targets it, starts
/// above its disruption budget's floor, and the Deployment leaves `replicas` to it.
#[test]
fn ingest_and_the_edge_are_autoscaled() -> Result<()> {
    let objects = rendered_objects()?;
    let mut scaled: Vec<&str> = of_kind(&objects, "HorizontalPodAutoscaler")
        .filter_map(|h| h["spec"]["scaleTargetRef"]["name"].as_str())
        .collect();
    scaled.sort_unstable();
    if scaled != ["ingest", "ws-edge"] {
        bail!("expected autoscalers for ingest and ws-edge, found {scaled:?}");
    }
    for name in scaled {
        let hpa = of_kind(&objects, "HorizontalPodAutoscaler")
            .find(|h| h["spec"]["scaleTargetRef"]["name"].as_str() == Some(name))
            .context("autoscaler")?;
        let deployment = object(&objects, "Deployment", name)?;
        if hpa["spec"]["scaleTargetRef"]["kind"].as_str() != Some("Deployment") {
            bail!("the autoscaler of {name} must target its Deployment");
        }
        if !deployment["spec"]["replicas"].is_null() {
            bail!("Deployment {name} sets replicas, which every apply would reset under its autoscaler");
        }
        let budget = of_kind(&objects, "PodDisruptionBudget")
            .find(|b| {
                selects(
                    &b["spec"]["selector"],
                    &deployment["spec"]["template"]["metadata"]["labels"],
                )
            })
            .context("budget")?;
        let min = hpa["spec"]["minReplicas"].as_u64().unwrap_or(1);
        let floor = budget["spec"]["minAvailable"].as_u64().unwrap_or(0);
        if min <= floor {
            bail!("{name} may scale to {min} replicas, but its budget keeps {floor}: a node drain would block");
        }
        let max = hpa["spec"]["maxReplicas"].as_u64().unwrap_or(0);
        if max <= min {
            bail!("{name}'s autoscaler cannot scale: min {min}, max {max}");
        }
    }
    Ok(())
}

/// NetworkPolicies deny by default and allow only the flows that exist: every pod is
/// covered, every named port a policy opens is a port of the pods it selects, and
/// every port opened towards paytrack pods is one they listen on.
#[test]
fn network_policies_deny_by_default_and_name_only_real_ports() -> Result<()> {
    let objects = rendered_objects()?;
    let policies: Vec<_> = of_kind(&objects, "NetworkPolicy").collect();
    let deny_all = policies.iter().any(|p| {
        let spec = &p["spec"];
        let types = spec["policyTypes"].as_sequence().cloned().unwrap_or_default();
        spec["podSelector"].as_mapping().is_some_and(|m| m.is_empty())
            && spec["ingress"].is_null()
            && spec["egress"].is_null()
            && types.iter().any(|t| t.as_str() == Some("Ingress"))
            && types.iter().any(|t| t.as_str() == Some("Egress"))
    });
    if !deny_all {
        bail!("no default-deny NetworkPolicy (empty podSelector, Ingress and Egress, no rules)");
    }
    let pods = pod_templates(&objects);
    let ports_of = |labels: &serde_norway::Value| -> Vec<serde_norway::Value> {
        pods.iter()
            .filter(|(_, _, template)| {
                labels
                    .as_mapping()
                    .is_some_and(|_| selects(labels, &template["metadata"]["labels"]))
            })
            .flat_map(|(_, _, template)| {
                template["spec"]["containers"]
                    .as_sequence()
                    .cloned()
                    .unwrap_or_default()
            })
            .flat_map(|c| c["ports"].as_sequence().cloned().unwrap_or_default())
            .collect()
    };
    let listens = |ports: &[serde_norway::Value], port: &serde_norway::Value| {
        ports.iter().any(|p| &p["name"] == port || &p["containerPort"] == port)
    };
    for (kind, name, template) in &pods {
        let labels = &template["metadata"]["labels"];
        let specific = policies.iter().any(|p| {
            p["spec"]["podSelector"].as_mapping().is_some_and(|m| !m.is_empty())
                && selects(&p["spec"]["podSelector"], labels)
        });
        if !specific {
            bail!("{kind} {name} has no NetworkPolicy of its own: it could reach nothing but DNS");
        }
    }
    for policy in &policies {
        let selector = &policy["spec"]["podSelector"];
        let own_ports = ports_of(selector);
        for rule in policy["spec"]["ingress"].as_sequence().into_iter().flatten() {
            for port in rule["ports"].as_sequence().into_iter().flatten() {
                if !listens(&own_ports, &port["port"]) {
                    bail!(
                        "NetworkPolicy {} opens port {:?}, which no pod it selects listens on",
                        name_of(policy),
                        port["port"]
                    );
                }
            }
        }
        for rule in policy["spec"]["egress"].as_sequence().into_iter().flatten() {
            for peer in rule["to"].as_sequence().into_iter().flatten() {
                // Only peers among this base's pods can be checked.
                if !peer["namespaceSelector"].is_null() || peer["podSelector"].is_null() {
                    continue;
                }
                let target_ports = ports_of(&peer["podSelector"]);
                if target_ports.is_empty() {
                    bail!(
                        "NetworkPolicy {} allows traffic to pods the base does not run",
                        name_of(policy)
                    );
                }
                for port in rule["ports"].as_sequence().into_iter().flatten() {
                    if !listens(&target_ports, &port["port"]) {
                        bail!(
                            "NetworkPolicy {} allows port {:?}, which its target pods do not listen on",
                            name_of(policy),
                            port["port"]
                        );
                    }
                }
            }
        }
    }
    // Every port a Service routes to is opened by some policy, or the Service is dead.
    for service in of_kind(&objects, "Service") {
        let selector = &service["spec"]["selector"];
        for port in service["spec"]["ports"].as_sequence().into_iter().flatten() {
            let target = &port["targetPort"];
            let opened = policies.iter().any(|p| {
                let policy_selector = &p["spec"]["podSelector"];
                selector.as_mapping().is_some_and(|wanted| {
                    wanted
                        .iter()
                        .all(|(k, v)| policy_selector["matchLabels"].get(k) == Some(v))
                }) && p["spec"]["ingress"].as_sequence().into_iter().flatten().any(|rule| {
                    rule["ports"]
                        .as_sequence()
                        .into_iter()
                        .flatten()
                        .any(|p| &p["port"] == target || p["port"] == port["port"])
                })
            });
            let metrics = port["name"].as_str() == Some("metrics") || port["name"].as_str() == Some("monitor");
            if !opened && !metrics {
                bail!(
                    "Service {} routes to {target:?}, which no NetworkPolicy opens",
                    name_of(service)
                );
            }
        }
    }
    Ok(())
}
