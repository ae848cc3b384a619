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
