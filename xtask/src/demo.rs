//! `cargo xtask demo kind|minikube`: a cluster on this machine with sscsi
//! installed from the chart, a secret store, a SecretProviderClass and a pod
//! that mounts it. Every step is printed before it runs and can run again
//! (created objects are applied, existing clusters reused); `--dry-run`
//! prints the steps without running them.

use serde_json::{Value, json};

pub const CLUSTER: &str = "sscsi";
const NAMESPACE: &str = "demo";
/// The `local` provider's directory on the demo node.
const LOCAL_ROOT: &str = "/var/lib/sscsi-local";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Engine {
    Kind,
    Minikube,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// An in-cluster Vault dev server and the `vault` provider.
    Vault,
    /// The `local` provider, reading files from the node.
    Local,
}

impl Backend {
    /// The providers the demo's image is built with: only what it uses.
    fn features(self) -> &'static str {
        match self {
            Backend::Vault => "vault",
            Backend::Local => "",
        }
    }

    /// The image tag `cargo xtask image` gives that build.
    fn tag(self) -> String {
        crate::image::tag(env!("CARGO_PKG_VERSION"), self.features())
    }

    /// Where `cargo xtask image` writes that build's archive (relative to the workspace).
    fn archive(self) -> String {
        format!("target/image/sscsi-{}.tar", self.tag())
    }
}

/// One step: a description, a command line, and what it reads on stdin.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub what: String,
    pub argv: Vec<String>,
    pub stdin: Option<String>,
}

fn step(what: &str, argv: &[&str], stdin: Option<String>) -> Step {
    Step { what: what.to_owned(), argv: argv.iter().map(|a| (*a).to_owned()).collect(), stdin }
}

/// The chart's values for the demo: the locally built image, and the provider.
pub fn chart_values(backend: Backend) -> Value {
    let mut values = json!({
        "linux": {"image": {"repository": crate::image::REPOSITORY, "tag": backend.tag(), "pullPolicy": "Never"}},
        "enableSecretRotation": true,
        "rotationPollInterval": "10s",
        "providers": {
            "aws": {"enabled": false},
            "azure": {"enabled": false},
            "gcp": {"enabled": false},
            "vault": {"enabled": backend == Backend::Vault, "address": "http://vault.demo:8200"},
        },
    });
    if backend == Backend::Local {
        values["providers"]["vault"] = json!({"enabled": false});
        values["providers"]["local"] = json!({"enabled": true, "root": LOCAL_ROOT});
    }
    values
}

/// The objects the demo applies besides the chart, as a `List`.
pub fn demo_objects(backend: Backend) -> Value {
    let mut items =
        vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})];
    items.push(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "app", "namespace": NAMESPACE}}));
    let parameters = match backend {
        Backend::Vault => {
            // Vault's kubernetes auth reviews pod tokens with its own service account.
            items.push(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "vault", "namespace": NAMESPACE}}));
            items.push(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": "sscsi-demo-vault-tokenreview"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:auth-delegator"},
                "subjects": [{"kind": "ServiceAccount", "name": "vault", "namespace": NAMESPACE}],
            }));
            items.push(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "vault", "namespace": NAMESPACE},
                "spec": {
                    "selector": {"matchLabels": {"app": "vault"}},
                    "template": {
                        "metadata": {"labels": {"app": "vault"}},
                        "spec": {"serviceAccountName": "vault", "containers": [{
                            "name": "vault",
                            "image": "quay.io/openbao/openbao:2.4",
                            "args": ["server", "-dev", "-dev-root-token-id=root", "-dev-listen-address=0.0.0.0:8200"],
                            "ports": [{"containerPort": 8200}],
                        }]},
                    },
                },
            }));
            items.push(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "vault", "namespace": NAMESPACE},
                "spec": {"selector": {"app": "vault"}, "ports": [{"port": 8200, "targetPort": 8200}]},
            }));
            json!({
                "roleName": "app",
                "objects": "- objectName: password\n  secretPath: secret/data/demo\n  secretKey: password\n",
            })
        }
        Backend::Local => json!({"objects": "- objectName: password\n"}),
    };
    let provider = match backend {
        Backend::Vault => "vault",
        Backend::Local => "local",
    };
    items.push(json!({
        "apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
        "metadata": {"name": "demo", "namespace": NAMESPACE},
        "spec": {"provider": provider, "parameters": parameters},
    }));
    items.push(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "app", "namespace": NAMESPACE},
        "spec": {
            "serviceAccountName": "app",
            "containers": [{
                "name": "app",
                "image": "busybox:1.36",
                "command": ["sh", "-c", "while true; do cat /secrets/password; echo; sleep 5; done"],
                "volumeMounts": [{"name": "secrets", "mountPath": "/secrets", "readOnly": true}],
            }],
            "volumes": [{"name": "secrets", "csi": {
                "driver": "secrets-store.csi.k8s.io", "readOnly": true,
                "volumeAttributes": {"secretProviderClass": "demo"},
            }}],
        },
    }));
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

/// Vault's configuration for the demo, run inside its pod with the `bao` CLI.
fn vault_setup(value: &str) -> String {
    format!(
        "export BAO_ADDR=http://127.0.0.1:8200 BAO_TOKEN=root; \
         bao auth list | grep -q kubernetes/ || bao auth enable kubernetes; \
         bao write auth/kubernetes/config kubernetes_host=https://kubernetes.default.svc; \
         echo 'path \"secret/data/demo\" {{ capabilities = [\"read\"] }}' | bao policy write app -; \
         bao write auth/kubernetes/role/app bound_service_account_names=app bound_service_account_namespaces={NAMESPACE} audience=vault token_policies=app; \
         bao kv put secret/demo password={value}"
    )
}

fn write_local(value: &str) -> String {
    format!("mkdir -p {LOCAL_ROOT} && printf %s {value} > {LOCAL_ROOT}/password")
}

/// A shell command on the (single) demo node.
fn on_node(engine: Engine, what: &str, script: &str) -> Step {
    match engine {
        Engine::Kind => step(
            what,
            &["docker", "exec", &format!("{CLUSTER}-control-plane"), "sh", "-c", script],
            None,
        ),
        Engine::Minikube => step(
            what,
            &["minikube", "-p", CLUSTER, "ssh", "--", "sudo", "sh", "-c", &format!("'{script}'")],
            None,
        ),
    }
}

/// The steps, in order. `manifests` is the chart rendered with [`chart_values`].
pub fn steps(engine: Engine, backend: Backend, manifests: &str, rotate: bool) -> Vec<Step> {
    // The image is an archive cargo xtask image writes: no container engine builds it.
    let build = step(
        "build the image",
        &["cargo", "xtask", "image", "--features", backend.features()],
        None,
    );
    let archive = backend.archive();
    let mut steps = match engine {
        Engine::Kind => vec![
            step(
                "create the cluster (reused when it exists)",
                &[
                    "sh",
                    "-c",
                    &format!(
                        "kind get clusters | grep -qx {CLUSTER} || kind create cluster --name {CLUSTER}"
                    ),
                ],
                None,
            ),
            build,
            step(
                "load the image into the cluster",
                &["kind", "load", "image-archive", &archive, "--name", CLUSTER],
                None,
            ),
        ],
        Engine::Minikube => vec![
            step(
                "start the cluster (reused when it exists)",
                &["minikube", "start", "-p", CLUSTER],
                None,
            ),
            build,
            step(
                "load the image into the cluster",
                &["minikube", "-p", CLUSTER, "image", "load", &archive],
                None,
            ),
        ],
    };
    let context = match engine {
        Engine::Kind => format!("kind-{CLUSTER}"),
        Engine::Minikube => CLUSTER.to_owned(),
    };
    let kubectl = |args: &[&str]| -> Vec<String> {
        let mut argv = vec!["kubectl".to_owned(), "--context".to_owned(), context.clone()];
        argv.extend(args.iter().map(|a| (*a).to_owned()));
        argv
    };
    steps.push(Step {
        what: "install sscsi from the chart".into(),
        argv: kubectl(&["apply", "--server-side", "-f", "-"]),
        stdin: Some(manifests.to_owned()),
    });
    steps.push(Step {
        what: "wait for sscsi".into(),
        argv: kubectl(&[
            "-n",
            "kube-system",
            "rollout",
            "status",
            "daemonset/sscsi",
            "--timeout=180s",
        ]),
        stdin: None,
    });
    match backend {
        Backend::Vault => {
            let objects = demo_objects(backend);
            let (store, rest): (Vec<Value>, Vec<Value>) =
                objects["items"].as_array().expect("items").iter().cloned().partition(|o| {
                    !matches!(o["kind"].as_str(), Some("SecretProviderClass" | "Pod"))
                });
            steps.push(Step {
                what: "start the Vault dev server".into(),
                argv: kubectl(&["apply", "-f", "-"]),
                stdin: Some(
                    json!({"apiVersion": "v1", "kind": "List", "items": store}).to_string(),
                ),
            });
            steps.push(Step {
                what: "wait for Vault".into(),
                argv: kubectl(&[
                    "-n",
                    NAMESPACE,
                    "rollout",
                    "status",
                    "deployment/vault",
                    "--timeout=180s",
                ]),
                stdin: None,
            });
            steps.push(Step {
                what: "configure Vault and write the secret".into(),
                argv: kubectl(&[
                    "-n",
                    NAMESPACE,
                    "exec",
                    "deploy/vault",
                    "--",
                    "sh",
                    "-c",
                    &vault_setup("first-value"),
                ]),
                stdin: None,
            });
            steps.push(Step {
                what: "create the SecretProviderClass and the pod".into(),
                argv: kubectl(&["apply", "-f", "-"]),
                stdin: Some(json!({"apiVersion": "v1", "kind": "List", "items": rest}).to_string()),
            });
        }
        Backend::Local => {
            steps.push(on_node(
                engine,
                "write the secret on the node",
                &write_local("first-value"),
            ));
            steps.push(Step {
                what: "create the namespace, SecretProviderClass and pod".into(),
                argv: kubectl(&["apply", "-f", "-"]),
                stdin: Some(demo_objects(backend).to_string()),
            });
        }
    }
    steps.push(Step {
        what: "wait for the pod".into(),
        argv: kubectl(&[
            "-n",
            NAMESPACE,
            "wait",
            "pod/app",
            "--for=condition=Ready",
            "--timeout=180s",
        ]),
        stdin: None,
    });
    steps.push(Step {
        what: "print the mounted file".into(),
        argv: kubectl(&["-n", NAMESPACE, "exec", "app", "--", "cat", "/secrets/password"]),
        stdin: None,
    });
    if rotate {
        steps.push(match backend {
            Backend::Local => on_node(engine, "change the secret", &write_local("second-value")),
            Backend::Vault => Step {
                what: "change the secret".into(),
                argv: kubectl(&[
                    "-n",
                    NAMESPACE,
                    "exec",
                    "deploy/vault",
                    "--",
                    "sh",
                    "-c",
                    "BAO_ADDR=http://127.0.0.1:8200 BAO_TOKEN=root bao kv put secret/demo password=second-value",
                ]),
                stdin: None,
            },
        });
        steps.push(Step {
            what:
                "wait for the rotation (poll interval 10s, kubelet republishes about every minute)"
                    .into(),
            argv: vec!["sleep".into(), "75".into()],
            stdin: None,
        });
        steps.push(Step {
            what: "print the file again".into(),
            argv: kubectl(&["-n", NAMESPACE, "exec", "app", "--", "cat", "/secrets/password"]),
            stdin: None,
        });
    }
    steps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_with_vault_and_rotation() {
        let steps = steps(Engine::Kind, Backend::Vault, "manifests", true);
        let whats: Vec<&str> = steps.iter().map(|s| s.what.as_str()).collect();
        assert_eq!(
            whats[..3],
            [
                "create the cluster (reused when it exists)",
                "build the image",
                "load the image into the cluster"
            ]
        );
        // The image is the archive cargo xtask image writes, with the vault provider only.
        assert_eq!(steps[1].argv, ["cargo", "xtask", "image", "--features", "vault"]);
        let archive = "target/image/sscsi-0.1.0-vault.tar";
        assert_eq!(steps[2].argv, ["kind", "load", "image-archive", archive, "--name", "sscsi"]);
        assert_eq!(chart_values(Backend::Vault)["linux"]["image"]["tag"], "0.1.0-vault");
        assert!(whats.contains(&"configure Vault and write the secret"));
        assert_eq!(whats.last(), Some(&"print the file again"));
        let install = steps.iter().find(|s| s.what == "install sscsi from the chart").unwrap();
        assert_eq!(install.stdin.as_deref(), Some("manifests"));
        assert!(install.argv.starts_with(&[
            "kubectl".into(),
            "--context".into(),
            "kind-sscsi".into()
        ]));
    }

    /// The demo's chart values render, and every object the demo applies is
    /// valid against the Kubernetes schemas.
    #[test]
    fn the_demo_manifests_are_valid() {
        for backend in [Backend::Vault, Backend::Local] {
            let report =
                crate::render_chart(&["--values", &chart_values(backend).to_string()]).unwrap();
            let report: Value = serde_json::from_str(&report).unwrap();
            assert_eq!(report["invalid"], json!([]), "{backend:?}");
            let objects = demo_objects(backend).to_string();
            let check = "import json,sys,kubernetes_validate as k\n\
                         for o in json.load(sys.stdin)['items']:\n\
                         \x20   o['kind']=='SecretProviderClass' or k.validate(o, '1.33', strict=True)";
            let mut child = std::process::Command::new(sscsi_testkit::program("python3"))
                .args(["-c", check])
                .stdin(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child.stdin.take().unwrap().write_all(objects.as_bytes()).unwrap();
            let output = child.wait_with_output().unwrap();
            assert!(
                output.status.success(),
                "{backend:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    }

    #[test]
    fn minikube_with_the_local_provider() {
        let steps = steps(Engine::Minikube, Backend::Local, "m", false);
        assert_eq!(steps[0].argv, ["minikube", "start", "-p", "sscsi"]);
        assert_eq!(steps[1].argv, ["cargo", "xtask", "image", "--features", ""]);
        let archive = "target/image/sscsi-0.1.0-local.tar";
        assert_eq!(steps[2].argv, ["minikube", "-p", "sscsi", "image", "load", archive]);
        assert!(!steps.iter().any(|s| s.what.contains("Vault")));
        let values = chart_values(Backend::Local);
        assert_eq!(values["providers"]["vault"]["enabled"], false);
        let objects = demo_objects(Backend::Local);
        let spc = objects["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["kind"] == "SecretProviderClass")
            .unwrap();
        assert_eq!(spc["spec"]["provider"], "local");
    }
}
