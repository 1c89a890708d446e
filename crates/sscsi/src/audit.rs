//! `sscsi audit`: sscsi-kube's audit of the cluster, printed.

use anyhow::Context;
use sscsi_kube::audit::Audit;

use crate::cli::{AuditArgs, Output};

pub async fn run(args: AuditArgs) -> anyhow::Result<()> {
    let client =
        sscsi_kube::client(args.kubeconfig.as_deref()).await.context("connect to Kubernetes")?;
    let audit = sscsi_kube::audit::audit(&client).await.context("read the cluster")?;
    match args.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&audit)?),
        Output::Text => print!("{}", text(&audit)),
    }
    Ok(())
}

fn text(audit: &Audit) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let none = |out: &mut String, empty: bool| {
        if empty {
            out.push_str("  none\n");
        }
    };
    let _ = writeln!(out, "SecretProviderClasses ({}):", audit.classes.len());
    for c in &audit.classes {
        let syncs = match c.syncs_into.as_slice() {
            [] => String::new(),
            names => format!(", syncs into Secrets {} in {}", names.join(", "), c.namespace),
        };
        let _ = writeln!(
            out,
            "  {}/{}: provider {}, mounted by {} pods{syncs}",
            c.namespace, c.name, c.provider, c.mounted_by
        );
    }
    none(&mut out, audit.classes.is_empty());
    let _ = writeln!(out, "Reading with the node's identity ({}):", audit.node_identities.len());
    for n in &audit.node_identities {
        let pod = n.pod.as_deref().map(|p| format!(" (pod {p})")).unwrap_or_default();
        let _ = writeln!(out, "  {}/{} [{}]{pod}: {}", n.namespace, n.class, n.provider, n.reason);
    }
    none(&mut out, audit.node_identities.is_empty());
    let _ = writeln!(out, "Secrets managed by the driver ({}):", audit.managed_secrets.len());
    for s in &audit.managed_secrets {
        let owners = if s.owners.is_empty() { "no owner".to_owned() } else { s.owners.join(", ") };
        let _ = writeln!(out, "  {}/{}: owned by {owners}", s.namespace, s.name);
    }
    none(&mut out, audit.managed_secrets.is_empty());
    let _ = writeln!(out, "SecretSyncs ({}):", audit.secret_syncs.len());
    for s in &audit.secret_syncs {
        let _ = writeln!(
            out,
            "  {}/{}: class {}, service account {}, Secret {}/{} ({})",
            s.namespace, s.name, s.class, s.service_account, s.namespace, s.name, s.secret_type
        );
    }
    none(&mut out, audit.secret_syncs.is_empty());
    out
}
