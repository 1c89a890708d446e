//! The Helm chart rendered by Helm's own engine (helm-python-sdk) with the
//! value combinations users choose; every object checked against the
//! Kubernetes OpenAPI schemas (kubernetes-validate) and the chart linted.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

#[derive(Debug)]
struct Rendered {
    objects: Vec<Value>,
}

fn render(values: Value) -> Result<Rendered, String> {
    render_for(values, "1.33")
}

/// Rendered, linted and validated against Kubernetes `version`'s schemas.
fn render_for(values: Value, version: &str) -> Result<Rendered, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/render.py");
    let output = Command::new(sscsi_testkit::program("python3"))
        .arg(script)
        .args(["--values", &values.to_string(), "--kube-version", version])
        .output()
        .expect("python3");
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    let report: Value = serde_json::from_slice(&output.stdout).expect("render.py prints JSON");
    assert_eq!(report["lint"], json!([]), "helm lint findings for {values}");
    assert_eq!(report["invalid"], json!([]), "objects invalid against the schemas for {values}");
    Ok(Rendered { objects: report["objects"].as_array().cloned().unwrap_or_default() })
}

impl Rendered {
    fn kind(&self, kind: &str) -> Option<&Value> {
        self.objects.iter().find(|o| o["kind"] == kind)
    }

    fn audiences(&self) -> Vec<String> {
        let driver = self.kind("CSIDriver").expect("a CSIDriver");
        driver["spec"]["tokenRequests"]
            .as_array()
            .map(|t| t.iter().map(|r| r["audience"].as_str().unwrap().to_owned()).collect())
            .unwrap_or_default()
    }

    fn container(&self) -> &Value {
        let containers =
            &self.kind("DaemonSet").expect("a DaemonSet")["spec"]["template"]["spec"]["containers"];
        assert_eq!(containers.as_array().unwrap().len(), 1, "one container, no sidecars");
        &containers[0]
    }

    fn args(&self) -> Vec<String> {
        self.container()["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect()
    }

    /// The ClusterRole's rules as "group/resource: verbs".
    fn rules(&self) -> Vec<String> {
        self.kind("ClusterRole").map(rules_as_strings).unwrap_or_default()
    }
}

fn only(provider: &str) -> Value {
    let mut providers = json!({"aws": {"enabled": false}, "azure": {"enabled": false}, "gcp": {"enabled": false}, "vault": {"enabled": false}});
    providers[provider]["enabled"] = json!(true);
    providers
}

#[test]
fn defaults_one_container_real_probes_and_the_union_of_audiences() {
    let r = render(json!({})).unwrap();
    let kinds: Vec<&str> = r.objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    for kind in [
        "CSIDriver",
        "DaemonSet",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ] {
        assert!(kinds.contains(&kind), "{kind} in {kinds:?}");
    }
    let driver = &r.kind("CSIDriver").unwrap()["spec"];
    assert_eq!(driver["podInfoOnMount"], true);
    assert_eq!(driver["attachRequired"], false);
    assert_eq!(driver["volumeLifecycleModes"], json!(["Ephemeral"]));
    assert_eq!(driver["requiresRepublish"], false);
    // The node applies the fsGroup itself (VOLUME_MOUNT_GROUP).
    assert_eq!(driver["fsGroupPolicy"], "File");
    assert_eq!(
        r.audiences(),
        [
            "sts.amazonaws.com",
            "pods.eks.amazonaws.com",
            "api://AzureADTokenExchange",
            "api://AKSIdentityBinding",
            "vault"
        ]
    );
    let container = r.container();
    let args = r.args();
    assert!(args.contains(&"--health-addr=:9808".to_owned()), "{args:?}");
    assert!(args.contains(&"--providers=aws,azure,gcp,vault".to_owned()), "{args:?}");
    assert!(args.contains(&"--plugin-registration-dir=/registration".to_owned()));
    assert!(
        args.contains(
            &"--kubelet-registration-path=/var/lib/kubelet/plugins/csi-secrets-store/csi.sock"
                .to_owned()
        )
    );
    assert_eq!(
        container["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "healthz"})
    );
    assert_eq!(
        container["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "healthz"})
    );
    let ports: Vec<(String, i64)> = container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_owned(), p["containerPort"].as_i64().unwrap()))
        .collect();
    assert_eq!(ports, [("healthz".to_owned(), 9808), ("metrics".to_owned(), 8095)]);
    let pods_mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "mountpoint-dir")
        .unwrap();
    assert_eq!(pods_mount["mountPropagation"], "Bidirectional");
    assert_eq!(container["securityContext"]["privileged"], true);
    let rules = r.rules();
    assert!(
        !rules.iter().any(|r| r.starts_with("/secrets")),
        "no Secrets without syncSecret: {rules:?}"
    );
    assert!(rules.contains(&"/serviceaccounts/token: create".to_owned()), "{rules:?}");
}

#[test]
fn least_rbac_and_audiences_per_provider() {
    let aws = render(json!({"providers": only("aws")})).unwrap();
    assert_eq!(aws.audiences(), ["sts.amazonaws.com", "pods.eks.amazonaws.com"]);
    let rules = aws.rules();
    assert!(
        rules.contains(&"/nodes: get".to_owned())
            && rules.contains(&"/serviceaccounts: get".to_owned()),
        "{rules:?}"
    );
    assert!(!rules.iter().any(|r| r.contains("serviceaccounts/token")), "{rules:?}");
    assert!(aws.kind("Role").is_none(), "the vault key's Role only with vault");
    assert!(aws.args().contains(&"--providers=aws".to_owned()));

    let vault = render(json!({"providers": {"aws": {"enabled": false}, "azure": {"enabled": false}, "gcp": {"enabled": false}, "vault": {"enabled": true, "address": "https://vault.vault:8200"}}})).unwrap();
    assert_eq!(vault.audiences(), ["vault"]);
    let rules = vault.rules();
    // kubelet passes the `vault` token: the node needs no TokenRequest of its own.
    assert!(!rules.iter().any(|r| r.contains("serviceaccounts/token")), "{rules:?}");
    assert!(
        !rules.iter().any(|r| r.starts_with("/nodes") || r == "/serviceaccounts: get"),
        "{rules:?}"
    );
    let role = vault.kind("Role").unwrap();
    assert_eq!(role["rules"][0]["resourceNames"], json!(["sscsi-vault-hmac-key"]));
    assert!(vault.args().contains(&"--vault-addr=https://vault.vault:8200".to_owned()));

    let mut gcp_providers = only("gcp");
    gcp_providers["gcp"]["workloadIdentityPool"] = json!("my-project.svc.id.goog");
    let gcp = render(json!({"providers": gcp_providers})).unwrap();
    assert_eq!(gcp.audiences(), ["my-project.svc.id.goog"]);
    let token_grant =
        |r: &Rendered| r.rules().contains(&"/serviceaccounts/token: create".to_owned());
    assert!(!token_grant(&gcp), "kubelet passes the pool's token");
    // Tokens kubelet does not pass are requested by the node: granted then, and on demand.
    assert!(token_grant(&render(json!({"providers": only("gcp")})).unwrap()), "no pool");
    let vault_only =
        json!({"aws": {"enabled": false}, "azure": {"enabled": false}, "gcp": {"enabled": false}});
    let custom =
        render(json!({"providers": vault_only, "tokenRequests": [{"audience": "custom"}]}));
    assert!(token_grant(&custom.unwrap()), "vault's audience is not among tokenRequests");
    let forced = render(json!({"providers": only("aws"), "rbac": {"serviceAccountTokens": true}}));
    assert!(token_grant(&forced.unwrap()));
    let refused =
        render(json!({"providers": only("gcp"), "rbac": {"serviceAccountTokens": false}}));
    assert!(!token_grant(&refused.unwrap()));
    let azure = render(json!({"providers": only("azure")})).unwrap();
    assert_eq!(azure.audiences(), ["api://AzureADTokenExchange", "api://AKSIdentityBinding"]);
    assert!(azure.args().contains(&"--azure-cloud-name=AzurePublicCloud".to_owned()));
}

/// A volume mounted from the last-known-good copy is fetched again at its
/// next republish: kubelet republishes with rotation off too.
#[test]
fn serving_last_known_good_asks_kubelet_to_republish() {
    let r = render(json!({"serveLastKnownGood": "10m"})).unwrap();
    assert_eq!(r.kind("CSIDriver").unwrap()["spec"]["requiresRepublish"], true);
    assert!(r.args().contains(&"--serve-last-known-good=10m".to_owned()));
    assert!(!r.args().contains(&"--enable-secret-rotation".to_owned()));
}

#[test]
fn options_users_set() {
    let r = render(json!({
        "enableSecretRotation": true,
        "rotationPollInterval": "30s",
        "syncSecret": {"enabled": true, "allowedNamespaces": ["a", "b"]},
        "tokenRequests": [{"audience": "custom"}],
        "logVerbosity": 6,
        "logFormatJSON": true,
        "metricsAddr": "",
        "fsGroupPolicy": "",
        "minRotationPollInterval": "30s",
        "pinClassGeneration": true,
        "backendBudget": {"callsPerSecond": 25, "burst": 5},
        "serveLastKnownGood": "15m",
        "linux": {"hostNetwork": true, "tmpfsSize": "16Mi", "podAnnotations": {"x": "y"}},
        "providers": {"azure": {"allowNodeIdentity": true}, "gcp": {"allowNodeIdentity": true, "allowNodePublishSecret": true}},
    }))
    .unwrap();
    assert_eq!(r.kind("CSIDriver").unwrap()["spec"]["requiresRepublish"], true);
    assert!(r.kind("CSIDriver").unwrap()["spec"].get("fsGroupPolicy").is_none(), "left out");
    assert_eq!(r.audiences(), ["custom"], "tokenRequests overrides the default");
    let args = r.args();
    for arg in [
        "--enable-secret-rotation",
        "--rotation-poll-interval=30s",
        "--min-rotation-poll-interval=30s",
        "--pin-class-generation",
        "--enable-secret-sync",
        "--sync-allowed-namespaces=a,b",
        "--log-level=trace",
        "--log-format-json",
        "--metrics-addr=",
        "--tmpfs-size=16Mi",
        "--azure-allow-node-identity",
        "--gcp-allow-node-identity",
        "--gcp-allow-node-publish-secret",
        "--backend-calls-per-second=25",
        "--serve-last-known-good=15m",
        "--backend-burst=5",
    ] {
        assert!(args.contains(&arg.to_owned()), "{arg} in {args:?}");
    }
    let pod = &r.kind("DaemonSet").unwrap()["spec"]["template"];
    assert_eq!(pod["spec"]["dnsPolicy"], "ClusterFirstWithHostNet");
    assert_eq!(pod["metadata"]["annotations"]["x"], "y");
    assert_eq!(r.container()["ports"].as_array().unwrap().len(), 1, "no metrics port");
    // Allowed namespaces: Secret writes there only, by a Role in each, none cluster-wide.
    assert!(!r.rules().iter().any(|rule| rule.starts_with("/secrets")), "{:?}", r.rules());
    let sync_roles: Vec<(&Value, &Value)> = r
        .objects
        .iter()
        .filter(|o| o["kind"] == "Role" && o["metadata"]["name"] == "sscsi-sync")
        .map(|o| (&o["metadata"]["namespace"], &o["rules"]))
        .collect();
    let rule = json!([{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "create", "update"]}]);
    assert_eq!(sync_roles, [(&json!("a"), &rule), (&json!("b"), &rule)]);
    let bound: Vec<&Value> = r
        .objects
        .iter()
        .filter(|o| o["kind"] == "RoleBinding" && o["metadata"]["name"] == "sscsi-sync")
        .map(|o| &o["metadata"]["namespace"])
        .collect();
    assert_eq!(bound, [&json!("a"), &json!("b")]);
    let everywhere = render(json!({"syncSecret": {"enabled": true}})).unwrap();
    assert!(everywhere.rules().contains(&"/secrets: get,create,update".to_owned()));

    let none = render(json!({"rbac": {"install": false}, "serviceAccount": {"create": false, "name": "existing"}})).unwrap();
    assert!(none.kind("ClusterRole").is_none() && none.kind("ServiceAccount").is_none());
    assert_eq!(
        none.kind("DaemonSet").unwrap()["spec"]["template"]["spec"]["serviceAccountName"],
        "existing"
    );
}

#[test]
fn bad_values_are_refused_naming_the_key() {
    let cases = [
        (json!({"linux": {"hostNetwrk": true}}), "additional properties 'hostNetwrk' not allowed"),
        (
            json!({"enableSecretRotation": "yes"}),
            "/enableSecretRotation': got string, want boolean",
        ),
        (json!({"rotationPollInterval": "2 minutes"}), "/rotationPollInterval"),
        (json!({"providers": {"azure": {"cloudName": "Mars"}}}), "/providers/azure/cloudName"),
        (
            json!({"providers": {"gcp": {"workloadIdentityPool": "my-project"}}}),
            "/providers/gcp/workloadIdentityPool",
        ),
        (json!({"tokenRequests": [{"aud": "x"}]}), "/tokenRequests/0"),
        (
            json!({"syncSecrets": {"enabled": true}}),
            "additional properties 'syncSecrets' not allowed",
        ),
    ];
    for (values, message) in cases {
        let err = render(values.clone()).err().unwrap_or_else(|| panic!("{values} was accepted"));
        assert!(err.contains(message), "want {message:?} in {err:?}");
    }
}

/// The oldest Kubernetes the chart admits (`kubeVersion` in Chart.yaml: 1.22,
/// where the CSIDriver's `tokenRequests` and `requiresRepublish` became GA)
/// and the newest whose schemas we have: every object of the defaults and of
/// every provider alone validates against both.
#[test]
fn the_chart_holds_from_its_kube_version_floor_to_the_newest() {
    let chart = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/sscsi/Chart.yaml"),
    )
    .unwrap();
    assert!(chart.contains("kubeVersion: \">=1.22.0-0\""), "{chart}");
    let sync = json!({"syncSecret": {"enabled": true}, "enableSecretRotation": true});
    for version in ["1.22", "1.37"] {
        let alone = ["aws", "vault", "gcp", "azure"].map(|p| json!({"providers": only(p)}));
        for values in [json!({}), sync.clone()].into_iter().chain(alone) {
            let rendered = render_for(values.clone(), version)
                .unwrap_or_else(|e| panic!("{version} {values}: {e}"));
            let driver = rendered.kind("CSIDriver").expect("a CSIDriver");
            assert_eq!(driver["apiVersion"], "storage.k8s.io/v1", "{version}");
        }
    }
}

impl Rendered {
    fn named(&self, kind: &str, name: &str) -> Option<&Value> {
        self.objects.iter().find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
    }

    /// The rules of one ClusterRole as "group/resource: verbs".
    fn rules_of(&self, name: &str) -> Vec<String> {
        let role = self.named("ClusterRole", name).unwrap_or_else(|| panic!("ClusterRole {name}"));
        rules_as_strings(role)
    }
}

fn rules_as_strings(role: &Value) -> Vec<String> {
    role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            let group = r["apiGroups"][0].as_str().unwrap().to_owned();
            let verbs: Vec<&str> =
                r["verbs"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
            let verbs = verbs.join(",");
            r["resources"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |res| format!("{group}/{}: {verbs}", res.as_str().unwrap()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn sync_controller_is_opt_in_with_least_rbac_and_leader_election() {
    let off = render(json!({})).unwrap();
    assert!(off.named("Deployment", "sscsi-controller").is_none());
    assert!(off.kind("ValidatingAdmissionPolicy").is_none());

    let values = json!({
        "syncController": {"enabled": true, "rotationPollInterval": "5m"},
        "syncSecret": {"allowedNamespaces": ["shop", "web"]},
        "providers": only("aws"),
    });
    let r = render(values).unwrap();
    let deployment = r.named("Deployment", "sscsi-controller").expect("the controller");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "sscsi-controller");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    // Its pods are not the DaemonSet's.
    let selector = &deployment["spec"]["selector"]["matchLabels"];
    let node_selector = &r.kind("DaemonSet").unwrap()["spec"]["selector"]["matchLabels"];
    assert_ne!(selector, node_selector);
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    let args: Vec<&str> =
        container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    for want in [
        "controller",
        "--rotation-poll-interval=5m",
        "--token-request-audience=sts.amazonaws.com,pods.eks.amazonaws.com",
        "--sync-allowed-namespaces=shop,web",
        "--leader-elect",
        "--providers=aws",
    ] {
        assert!(args.contains(&want), "{want} in {args:?}");
    }
    let env: Vec<&str> =
        container["env"].as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert!(env.contains(&"SYNC_CONTROLLER_POD_NAME") && env.contains(&"SYNC_CONTROLLER_POD_UID"));

    let rules = r.rules_of("sscsi-controller");
    assert_eq!(
        rules,
        vec![
            "secret-sync.x-k8s.io/secretsyncs: get,list,watch",
            "secret-sync.x-k8s.io/secretsyncs/status: get,patch,update",
            "secrets-store.csi.x-k8s.io/secretproviderclasses: get,list,watch",
            "/secrets: create,patch",
            "/serviceaccounts/token: create",
            "/serviceaccounts: get",
            "events.k8s.io/events: create,patch",
        ]
    );
    let lease = r.named("Role", "sscsi-controller-leader-election").expect("the lease Role");
    assert_eq!(lease["metadata"]["namespace"], "kube-system");
    assert_eq!(rules_as_strings(lease), vec!["coordination.k8s.io/leases: get,create,update"]);

    // One replica needs no election.
    let single = render(json!({"syncController": {"enabled": true, "replicas": 1}})).unwrap();
    let args = single.named("Deployment", "sscsi-controller").unwrap()["spec"]["template"]["spec"]
        ["containers"][0]["args"]
        .to_string();
    assert!(!args.contains("--leader-elect"), "{args}");
}

#[test]
fn sync_controller_policies_need_1_30_and_bind_to_the_controller() {
    let values = json!({"syncController": {"enabled": true, "validatingAdmissionPolicies": {"enabled": true}},
                        "providers": only("vault")});
    let err = render_for(values.clone(), "1.29").expect_err("refused before 1.30");
    assert!(err.contains("needs Kubernetes 1.30 or later"), "{err}");
    let r = render_for(values, "1.30").unwrap();
    let policies: Vec<&Value> =
        r.objects.iter().filter(|o| o["kind"] == "ValidatingAdmissionPolicy").collect();
    let bindings: Vec<&Value> =
        r.objects.iter().filter(|o| o["kind"] == "ValidatingAdmissionPolicyBinding").collect();
    assert_eq!(policies.len(), 5);
    assert_eq!(bindings.len(), 5);
    for policy in &policies {
        let name = policy["metadata"]["name"].as_str().unwrap();
        let condition = &policy["spec"]["matchConditions"][0]["expression"];
        assert_eq!(
            condition,
            "request.userInfo.username == 'system:serviceaccount:kube-system:sscsi-controller'"
        );
        let binding = bindings.iter().find(|b| b["spec"]["policyName"] == name).expect("bound");
        assert_eq!(binding["spec"]["validationActions"], json!(["Deny"]));
    }
    let token = policies
        .iter()
        .find(|p| p["metadata"]["name"] == "sscsi-controller-validate-token-policy")
        .unwrap();
    let rule = token["spec"]["validations"][0]["expression"].as_str().unwrap();
    assert!(rule.contains("expirationSeconds == 600") && rule.contains(r#"["vault"]"#), "{rule}");
}

fn mount<'a>(container: &'a Value, name: &str) -> Option<&'a Value> {
    container["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == name)
}

#[test]
fn other_providers_sockets_are_mounted_read_only_and_searched_as_upstream() {
    let r = render(json!({})).unwrap();
    let args = r.args();
    for arg in [
        "--provider-volume=/var/run/secrets-store-csi-providers",
        "--additional-provider-volume-paths=/etc/kubernetes/secrets-store-csi-providers",
        "--max-call-recv-msg-size=4194304",
    ] {
        assert!(args.contains(&arg.to_owned()), "{arg} in {args:?}");
    }
    assert!(!args.iter().any(|a| a.starts_with("--provider-health-check")), "{args:?}");
    let container = r.container();
    for (name, path) in [
        ("providers-dir", "/var/run/secrets-store-csi-providers"),
        ("providers-dir-0", "/etc/kubernetes/secrets-store-csi-providers"),
    ] {
        let m = mount(container, name).unwrap_or_else(|| panic!("{name} mounted"));
        assert_eq!((m["mountPath"].as_str(), m["readOnly"].as_bool()), (Some(path), Some(true)));
    }
    let volumes = &r.kind("DaemonSet").unwrap()["spec"]["template"]["spec"]["volumes"];
    let host = |name: &str| {
        volumes
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == name)
            .map(|v| v["hostPath"].clone())
    };
    assert_eq!(
        host("providers-dir"),
        Some(json!({"path": "/var/run/secrets-store-csi-providers", "type": "DirectoryOrCreate"}))
    );

    let r = render(json!({
        "linux": {"providersDir": "/opt/providers", "additionalProvidersDirs": []},
        "maxCallRecvMsgSize": 8388608,
        "providerHealthCheck": true,
        "providerHealthCheckInterval": "30s",
    }))
    .unwrap();
    let args = r.args();
    for arg in [
        "--provider-volume=/opt/providers",
        "--additional-provider-volume-paths=",
        "--max-call-recv-msg-size=8388608",
        "--provider-health-check",
        "--provider-health-check-interval=30s",
    ] {
        assert!(args.contains(&arg.to_owned()), "{arg} in {args:?}");
    }
    assert!(mount(r.container(), "providers-dir-0").is_none());
}

#[test]
fn a_provider_server_alone_beside_the_upstream_driver() {
    let alone = |provider: &str| json!({"linux": {"enabled": false}, "providerServer": {"enabled": true, "provider": provider}});
    let r = render(alone("aws")).unwrap();
    let kinds: Vec<&str> = r.objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
    assert!(!kinds.contains(&"CSIDriver"), "the upstream chart's CSIDriver stays: {kinds:?}");
    let daemonsets: Vec<&Value> = r.objects.iter().filter(|o| o["kind"] == "DaemonSet").collect();
    assert_eq!(daemonsets.len(), 1, "only the provider server");
    assert_eq!(daemonsets[0]["metadata"]["name"], "sscsi-provider-server");
    let spec = &daemonsets[0]["spec"]["template"]["spec"];
    assert_eq!(spec["serviceAccountName"], "sscsi-provider-server");
    let container = &spec["containers"][0];
    let args: Vec<&str> =
        container["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    assert_eq!(&args[..3], ["provider-server", "--provider=aws", "--socket=/provider/aws.sock"]);
    assert!(!args.iter().any(|a| a.starts_with("--providers")), "{args:?}");
    assert_eq!(
        spec["volumes"][0]["hostPath"],
        json!({"path": "/var/run/secrets-store-csi-providers", "type": "DirectoryOrCreate"})
    );
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["securityContext"]["privileged"], Value::Null, "not privileged");
    assert_eq!(r.rules(), ["/serviceaccounts: get"], "only what aws needs");
    assert_eq!(r.objects.iter().filter(|o| o["kind"] == "ClusterRole").count(), 1);

    let vault = render(alone("vault")).unwrap();
    assert_eq!(vault.rules(), ["/serviceaccounts/token: create"]);
    let role = vault.kind("Role").expect("the version key's Role");
    assert_eq!(role["metadata"]["name"], "sscsi-provider-server-vault");

    let err = render(json!({"providerServer": {"enabled": true}})).unwrap_err();
    assert!(err.contains("providerServer.provider"), "{err}");
    let err = render(
        json!({"providerServer": {"enabled": true, "provider": "gcp"}, "providers": only("aws")}),
    )
    .unwrap_err();
    assert!(err.contains("providers.gcp.enabled"), "{err}");
    let err =
        render(json!({"providerServer": {"enabled": true, "provider": "akeyless"}})).unwrap_err();
    assert!(err.contains("providerServer"), "{err}");
}

#[test]
fn monitoring_is_opt_in_and_follows_its_values() {
    let r = render(json!({})).unwrap();
    for kind in ["PodMonitor", "PrometheusRule", "ConfigMap"] {
        assert!(r.kind(kind).is_none(), "{kind} rendered by default");
    }
    assert!(!r.args().contains(&"--metrics-pod-labels".to_owned()));

    let r = render(json!({"metrics": {
        "podLabels": true,
        "podMonitor": {"enabled": true, "labels": {"release": "kps"}},
        "prometheusRule": {"enabled": true, "labels": {"release": "kps"}, "staleIntervals": 5,
                           "for": "15m", "alertLabels": {"severity": "page"}},
        "dashboard": {"enabled": true, "namespace": "monitoring"},
    }}))
    .unwrap();
    assert!(r.args().contains(&"--metrics-pod-labels".to_owned()));
    // The PodMonitor scrapes the container's `metrics` port and keeps the
    // pod's own `namespace` label.
    let monitor = r.kind("PodMonitor").expect("a PodMonitor");
    assert_eq!(monitor["metadata"]["labels"]["release"], "kps");
    let endpoint = &monitor["spec"]["podMetricsEndpoints"][0];
    assert_eq!((&endpoint["port"], &endpoint["honorLabels"]), (&json!("metrics"), &json!(true)));
    let ports = r.container()["ports"].as_array().unwrap();
    assert!(ports.iter().any(|p| p["name"] == "metrics"), "{ports:?}");
    let selector = &monitor["spec"]["selector"]["matchLabels"];
    let pod_labels = &r.kind("DaemonSet").unwrap()["spec"]["template"]["metadata"]["labels"];
    for (key, value) in selector.as_object().unwrap() {
        assert_eq!(&pod_labels[key], value, "the selector matches the node pods");
    }

    let rule = r.kind("PrometheusRule").expect("a PrometheusRule");
    assert_eq!(rule["metadata"]["labels"]["release"], "kps");
    let rules = rule["spec"]["groups"][0]["rules"].as_array().unwrap();
    let alerts: Vec<&str> = rules.iter().map(|r| r["alert"].as_str().unwrap()).collect();
    assert_eq!(
        alerts,
        [
            "SscsiSecretsStale",
            "SscsiVolumesInBackoff",
            "SscsiBackendThrottled",
            "SscsiPublishFailing",
            "SscsiNodeNotReady",
            "SscsiExternalProviderDown"
        ]
    );
    for rule in rules {
        assert_eq!(rule["for"], "15m");
        assert_eq!(rule["labels"], json!({"severity": "page"}));
        let description = rule["annotations"]["description"].as_str().unwrap();
        assert!(
            description.contains("{{ $labels."),
            "Prometheus templates survive Helm: {description}"
        );
    }
    assert!(
        rules[0]["expr"]
            .as_str()
            .unwrap()
            .contains("(5 * max by (instance) (sscsi_rotation_interval_seconds) > 0)")
    );

    let dashboard = r.kind("ConfigMap").expect("the dashboard ConfigMap");
    assert_eq!(dashboard["metadata"]["namespace"], "monitoring");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    let model: Value = serde_json::from_str(dashboard["data"]["sscsi.json"].as_str().unwrap())
        .expect("the dashboard is JSON");
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/sscsi/files/dashboard.json");
    let committed: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    assert_eq!(model, committed, "the ConfigMap carries the file unchanged");
}

#[test]
fn hardened_defaults() {
    let r = render(json!({})).unwrap();
    let pod = &r.kind("DaemonSet").unwrap()["spec"]["template"]["spec"];
    // Every taint tolerated, but never a control-plane node.
    assert_eq!(pod["tolerations"], json!([{"operator": "Exists"}]));
    assert_eq!(
        pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"],
        json!([{"matchExpressions": [{"key": "node-role.kubernetes.io/control-plane", "operator": "DoesNotExist"}]}])
    );
    assert_eq!(pod["securityContext"]["seccompProfile"], json!({"type": "RuntimeDefault"}));
    let container = &r.container()["securityContext"];
    assert_eq!(container["readOnlyRootFilesystem"], true);
    assert_eq!(container["seccompProfile"], json!({"type": "RuntimeDefault"}));
    assert_eq!(container["privileged"], true, "tmpfs mounts and their propagation need it");
    // Workloads on control-plane nodes: the operator says so.
    let anywhere = render(json!({"linux": {"affinity": null}})).unwrap();
    assert!(
        anywhere.kind("DaemonSet").unwrap()["spec"]["template"]["spec"].get("affinity").is_none()
    );

    // KEP-5538: tokens in NodePublishVolume's secrets from 1.35 on, never before.
    let driver = |version: &str| {
        render_for(json!({}), version).unwrap().kind("CSIDriver").unwrap()["spec"].clone()
    };
    assert_eq!(driver("1.35")["serviceAccountTokenInSecrets"], true);
    assert!(driver("1.33").get("serviceAccountTokenInSecrets").is_none());
    let off = render_for(json!({"serviceAccountTokenInSecrets": false}), "1.37").unwrap();
    assert!(off.kind("CSIDriver").unwrap()["spec"].get("serviceAccountTokenInSecrets").is_none());
}

/// One admission request against a rendered ValidatingAdmissionPolicy,
/// evaluated as the API server does: its resource rules, its variables in
/// order, then each validation; a failed one answers with its message.
fn admit(policy: &Value, request: &Value, object: &Value) -> Result<(), String> {
    use std::collections::HashMap;
    let spec = &policy["spec"];
    let resource = request["resource"]["resource"].as_str().unwrap();
    let matched = spec["matchConstraints"]["resourceRules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["resources"].as_array().unwrap().iter().any(|x| x == resource));
    if !matched {
        return Ok(());
    }
    let value = |v: &Value| cel::to_value(v).unwrap();
    let run = |expression: &str, variables: &HashMap<String, cel::Value>| {
        let program = cel::Program::compile(expression)
            .unwrap_or_else(|e| panic!("{expression:?} is not CEL: {e}"));
        let mut context = cel::Context::default();
        context.add_variable_from_value("object", value(object));
        context.add_variable_from_value("request", value(request));
        context.add_variable_from_value("variables", variables.clone());
        program.execute(&context).unwrap_or_else(|e| panic!("{expression:?}: {e}"))
    };
    let mut variables = HashMap::new();
    for variable in spec["variables"].as_array().into_iter().flatten() {
        let computed = run(variable["expression"].as_str().unwrap(), &variables);
        variables.insert(variable["name"].as_str().unwrap().to_owned(), computed);
    }
    for validation in spec["validations"].as_array().unwrap() {
        if run(validation["expression"].as_str().unwrap(), &variables) != cel::Value::Bool(true) {
            assert_eq!(validation["reason"], "Forbidden");
            return match run(validation["messageExpression"].as_str().unwrap(), &variables) {
                cel::Value::String(message) => Err(message.to_string()),
                other => panic!("message {other:?}"),
            };
        }
    }
    Ok(())
}

/// A CREATE of `object` by `user` in `groups`.
fn create_request(object: &Value, user: &str, groups: &[&str]) -> Value {
    let kind = object["kind"].as_str().unwrap();
    let resource = match kind {
        "SecretProviderClass" => "secretproviderclasses",
        "SecretSync" => "secretsyncs",
        other => panic!("{other}"),
    };
    json!({
        "operation": "CREATE",
        "namespace": object["metadata"]["namespace"],
        "kind": {"kind": kind},
        "resource": {"resource": resource},
        "userInfo": {"username": user, "groups": groups},
    })
}

#[test]
fn admission_policies_allow_and_deny_as_their_rules_say() {
    let values = json!({
        "policies": {"enabled": true, "authors": {"users": ["system:serviceaccount:argocd:argocd-application-controller"], "groups": ["platform-team"]},
                     "nodeIdentityNamespaces": ["infra"]},
        "syncSecret": {"enabled": true, "allowedNamespaces": ["shop"]},
    });
    let err = render_for(values.clone(), "1.29").unwrap_err();
    assert!(err.contains("policies.enabled needs Kubernetes 1.30 or later"), "{err}");
    let r = render_for(values, "1.33").unwrap();
    let policy = |name: &str| {
        r.objects
            .iter()
            .find(|o| o["kind"] == "ValidatingAdmissionPolicy" && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{name}"))
    };
    for name in ["sscsi-authors", "sscsi-sync-namespaces", "sscsi-node-identity"] {
        let bound = r.objects.iter().any(|o| {
            o["kind"] == "ValidatingAdmissionPolicyBinding"
                && o["spec"]["policyName"] == name
                && o["spec"]["validationActions"] == json!(["Deny"])
        });
        assert!(bound, "{name} is bound");
    }
    let class = |namespace: &str, provider: &str, parameters: Value, secret_objects: bool| {
        let mut spec = json!({"provider": provider, "parameters": parameters});
        if secret_objects {
            spec["secretObjects"] = json!([{"secretName": "s", "type": "Opaque", "data": [{"objectName": "o", "key": "k"}]}]);
        }
        json!({"apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
               "metadata": {"name": "c", "namespace": namespace}, "spec": spec})
    };
    let sync = |namespace: &str| {
        json!({"apiVersion": "secret-sync.x-k8s.io/v1alpha1", "kind": "SecretSync",
               "metadata": {"name": "s", "namespace": namespace},
               "spec": {"secretProviderClassName": "c", "serviceAccountName": "a",
                        "secretObject": {"type": "Opaque", "data": [{"sourcePath": "p", "targetKey": "k"}]}}})
    };
    let argocd = "system:serviceaccount:argocd:argocd-application-controller";
    let by = |policy: &Value, object: &Value, user: &str, groups: &[&str]| {
        admit(policy, &create_request(object, user, groups), object)
    };

    // Who may author classes and SecretSyncs.
    let authors = policy("sscsi-authors");
    let aws = class("shop", "aws", json!({"objects": "[]"}), false);
    assert_eq!(by(authors, &aws, argocd, &[]), Ok(()));
    assert_eq!(by(authors, &aws, "jane", &["platform-team", "dev"]), Ok(()));
    assert_eq!(
        by(authors, &sync("shop"), "mallory", &["dev"]),
        Err("SecretSync shop/s may be created or changed only by the users system:serviceaccount:argocd:argocd-application-controller or the groups platform-team, not by mallory".into())
    );

    // Secrets only where syncSecret.allowedNamespaces allows them.
    let namespaces = policy("sscsi-sync-namespaces");
    assert_eq!(by(namespaces, &class("shop", "aws", json!({}), true), argocd, &[]), Ok(()));
    assert_eq!(
        by(namespaces, &class("dev", "aws", json!({}), false), argocd, &[]),
        Ok(()),
        "no secretObjects"
    );
    assert_eq!(
        by(namespaces, &class("dev", "aws", json!({}), true), argocd, &[]),
        Err("SecretProviderClass dev/c: spec.secretObjects are allowed only in the namespaces shop (syncSecret.allowedNamespaces)".into())
    );
    assert_eq!(by(namespaces, &sync("shop"), argocd, &[]), Ok(()));
    assert_eq!(
        by(namespaces, &sync("dev"), argocd, &[]),
        Err("SecretSync dev/s: SecretSyncs are allowed only in the namespaces shop (syncSecret.allowedNamespaces)".into())
    );

    // The node's identity only where listed; Go's booleans, as the Azure provider reads them.
    let node = policy("sscsi-node-identity");
    let denied = "reads with the node's identity (Azure useVMManagedIdentity or usePodIdentity, GCP auth: provider-adc), allowed only in the namespaces [infra] (policies.nodeIdentityNamespaces)";
    for parameters in [
        json!({"useVMManagedIdentity": "true"}),
        json!({"usePodIdentity": "T"}),
        json!({"useVMManagedIdentity": "1"}),
    ] {
        let azure = class("shop", "azure", parameters.clone(), false);
        assert_eq!(
            by(node, &azure, argocd, &[]),
            Err(format!("SecretProviderClass shop/c {denied}")),
            "{parameters}"
        );
        assert_eq!(by(node, &class("infra", "azure", parameters, false), argocd, &[]), Ok(()));
    }
    let gcp = class("shop", "gcp", json!({"auth": "provider-adc"}), false);
    assert_eq!(by(node, &gcp, argocd, &[]), Err(format!("SecretProviderClass shop/c {denied}")));
    for fine in [
        class("shop", "azure", json!({"useVMManagedIdentity": "false", "clientID": "x"}), false),
        class("shop", "gcp", json!({"auth": "pod-adc"}), false),
        class("shop", "aws", json!({"usePodIdentity": "true"}), false),
        json!({"apiVersion": "secrets-store.csi.x-k8s.io/v1", "kind": "SecretProviderClass",
               "metadata": {"name": "c", "namespace": "shop"}, "spec": {"provider": "azure"}}),
    ] {
        assert_eq!(by(node, &fine, argocd, &[]), Ok(()), "{fine}");
    }
    // SecretSyncs are not this policy's: it matches classes only.
    assert_eq!(by(node, &sync("shop"), argocd, &[]), Ok(()));
}
