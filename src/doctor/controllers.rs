//! Two controllers at boot: containers of configured names with a restart
//! policy (`always`, `unless-stopped`) are started by podman-restart.service
//! at boot, while mcrecover's units start (and, with `--replace`, replace) a
//! container of the same name. Whichever comes second wins; the daemon then
//! leaves the other's container alone as `external` (docs/daemon.md), which
//! is not what an operator who installed mcrecover expects after a reboot.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{Finding, Status};
use crate::config::{Config, Mode};
use crate::images::{self, PodmanRunner};

/// How long each podman query may take.
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Marks the lines of our `--format` templates.
const MARK: &str = "mcrecover-doctor";

/// Restart policies podman-restart.service acts on at boot.
const BOOT_POLICIES: [&str; 2] = ["always", "unless-stopped"];

/// The marked lines of `out`, split at `|` (without the mark).
fn marked(out: &str) -> Vec<Vec<String>> {
    out.lines()
        .filter_map(|l| l.trim().strip_prefix(MARK))
        .filter_map(|l| l.strip_prefix('|'))
        .map(|l| l.split('|').map(|f| f.trim().to_owned()).collect())
        .collect()
}

/// One finding per container of a configured name whose restart policy
/// makes podman-restart.service start it at boot; one `ok` when there is
/// none; a warning when podman cannot be asked. Two podman queries
/// (`ps --all`, then `container inspect` of the configured names found).
pub(super) async fn check_restart_policies(cfg: &Config) -> Vec<Finding> {
    // Container name -> (service, unit).
    let names: BTreeMap<String, (String, String)> = cfg
        .services
        .values()
        .filter_map(|s| {
            let c = s.container.as_ref()?;
            Some((
                c.name.clone(),
                (s.name.clone(), crate::plan::service_unit(&s.name)),
            ))
        })
        .collect();
    if names.is_empty() {
        return Vec::new();
    }
    let cannot = |why: String| {
        vec![Finding::bad(
            Status::Warn,
            "restart policies",
            format!("cannot list the containers: {why}"),
            "run doctor as root or as the platform user; check `podman ps --all` by hand",
        )]
    };
    let runner = PodmanRunner::Direct;
    let ps_fmt = format!("{MARK}|{{{{.Names}}}}");
    let ps = match images::podman_query_via(
        cfg,
        &runner,
        &["ps", "--all", "--format", &ps_fmt],
        QUERY_TIMEOUT,
    )
    .await
    {
        Ok(q) if q.run.success() => q.stdout,
        Ok(q) => return cannot(q.run.detail()),
        Err(e) => return cannot(e.to_string()),
    };
    let present: Vec<String> = marked(&ps)
        .into_iter()
        .flatten()
        .flat_map(|n| n.split(',').map(str::to_owned).collect::<Vec<_>>())
        .filter(|n| names.contains_key(n))
        .collect();
    let mut found = Vec::new();
    if !present.is_empty() {
        let fmt = format!(
            "{MARK}|{{{{.Name}}}}|{{{{.HostConfig.RestartPolicy.Name}}}}|{{{{.ImageName}}}}"
        );
        let mut args = vec!["container", "inspect", "--format", fmt.as_str()];
        args.extend(present.iter().map(String::as_str));
        let out = match images::podman_query_via(cfg, &runner, &args, QUERY_TIMEOUT).await {
            Ok(q) if q.run.success() => q.stdout,
            Ok(q) => return cannot(q.run.detail()),
            Err(e) => return cannot(e.to_string()),
        };
        for line in marked(&out) {
            let [name, policy, image] = line.as_slice() else {
                continue;
            };
            let name = name.trim_start_matches('/');
            if !BOOT_POLICIES.contains(&policy.as_str()) {
                continue;
            }
            if let Some((svc, unit)) = names.get(name) {
                found.push(finding(cfg, name, policy, image, svc, unit));
            }
        }
    }
    if found.is_empty() {
        found.push(Finding::ok(
            "restart policies",
            "no container of a configured name has a restart policy that starts it at boot",
        ));
    }
    found
}

fn finding(cfg: &Config, name: &str, policy: &str, image: &str, svc: &str, unit: &str) -> Finding {
    let disable = match cfg.platform.mode {
        Mode::Rootless => {
            let user = cfg
                .platform
                .user
                .as_ref()
                .map_or("the platform user", |u| u.name.as_str());
            format!("`systemctl --user disable podman-restart.service` as {user}")
        }
        Mode::Rootful => "`systemctl disable podman-restart.service`".to_owned(),
    };
    Finding::bad(
        Status::Warn,
        format!("restart policy {name}"),
        format!(
            "container {name} ({image}) has restart policy `{policy}`: podman-restart.service \
             starts it at boot, and {unit} (service {svc}) starts a container of the same \
             name: two controllers (the daemon leaves the other one's container alone as \
             `external`)"
        ),
        format!(
            "`podman update --restart=no {name}` (podman >= 5), or recreate it without \
             `--restart`; or, when mcrecover owns the platform, {disable}; \
             `mcrecover adopt {svc}` hands a running one to its unit"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marked_lines_only() {
        let out = "WARN[0000] x\nmcrecover-doctor|mcq|unless-stopped|r/mcq:v2\nother\n";
        assert_eq!(
            marked(out),
            vec![vec![
                "mcq".to_owned(),
                "unless-stopped".to_owned(),
                "r/mcq:v2".to_owned()
            ]]
        );
    }
}
