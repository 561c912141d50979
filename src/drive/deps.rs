//! Which of a unit's dependencies still matter for its start: the runner
//! starts a unit with `ignore-dependencies` (no transaction over the
//! dependency tree, no wait for the previous stage's gate unit) only when
//! none does, besides the dependencies the engine itself has just seen
//! satisfied (issue 15: the next stage's start).

use std::collections::BTreeSet;

use zbus::proxy::CacheProperties;
use zbus_systemd::systemd1::UnitProxy;

use super::error::map_zbus;
use super::{DriveError, Systemd};

impl Systemd {
    /// The dependencies of `unit` a start job in `ignore-dependencies` mode
    /// would skip while they still matter: a `Requires=`, `Requisite=`,
    /// `BindsTo=` or `Wants=` unit that is not active, or an `After=` unit
    /// that is changing (`activating`, `deactivating`, `reloading`) or has
    /// a job queued. Units in `except` are left out. Empty: starting it
    /// without its dependencies starts it as `replace` would, minus the
    /// wait. Each distinct unit is asked once per call (two properties).
    pub async fn unsettled_dependencies(
        &self,
        unit: &str,
        except: &[String],
    ) -> Result<Vec<String>, DriveError> {
        let proxy = self.unit_proxy(unit).await?;
        let err = |e| map_zbus(e, self.ctx("Get dependencies", Some(unit)));
        let mut needed: BTreeSet<String> = BTreeSet::new();
        needed.extend(proxy.requires().await.map_err(err)?);
        needed.extend(proxy.requisite().await.map_err(err)?);
        needed.extend(proxy.binds_to().await.map_err(err)?);
        needed.extend(proxy.wants().await.map_err(err)?);
        let ordered: BTreeSet<String> = proxy.after().await.map_err(err)?.into_iter().collect();
        let mut unsettled = Vec::new();
        for dep in needed.iter().chain(ordered.difference(&needed)) {
            if except.contains(dep) {
                continue;
            }
            let p = self.unit_proxy(dep).await?;
            let derr = |e| map_zbus(e, self.ctx("Get ActiveState", Some(dep)));
            let active = p.active_state().await.map_err(derr)?;
            let (job, _) = p.job().await.map_err(derr)?;
            let settled = job == 0
                && (active == "active"
                    || (!needed.contains(dep) && matches!(active.as_str(), "inactive" | "failed")));
            if !settled {
                unsettled.push(format!(
                    "{dep} ({active}{})",
                    if job == 0 { "" } else { ", job queued" }
                ));
            }
        }
        Ok(unsettled)
    }

    /// A property proxy for `unit` (loaded if it was not), reading each
    /// property once (no cache, no signal match).
    async fn unit_proxy(&self, unit: &str) -> Result<UnitProxy<'static>, DriveError> {
        let path = self.load_unit(unit).await?;
        let err = |e| map_zbus(e, self.ctx("LoadUnit", Some(unit)));
        UnitProxy::builder(&self.inner.conn)
            .path(path)
            .cache_properties(CacheProperties::No)
            .build()
            .await
            .map_err(err)
    }
}
