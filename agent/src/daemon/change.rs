//! Changing what is in force: the requests of the control socket, a runtime toggle, a
//! reload, a rollback at its deadline. Each compiles a whole new generation first
//! (`compile`), passes the admission rules of `state.rs`, and goes in through
//! `put_in_force`, the one path to the kernel; on error nothing changed.

use std::time::Instant;

use tokio::sync::broadcast;
use tracing::{error, info, warn};

use super::{Daemon, Desired, Pending, catalog, now, now_ms, start::seed_flows, state, status};
use crate::{
    catalog::{Catalog, Feature},
    control::{
        protocol::{ChangeOptions, Changed, LearnedEntry, Request, Response},
        server::{self, Incoming},
    },
    dataplane::DnsControl,
    dns::learner::Learner,
    policy::{Config, Policy, StateMode, Tables, compile_policy, config::load_config, explain::explain},
};

/// Builds and compiles the policy of `desired` under `config`: everything that can
/// fail on bad input fails here, before the kernel is touched.
pub(super) fn compile(catalog: &Catalog, config: &Config, desired: &Desired) -> anyhow::Result<(Policy, Tables)> {
    let config = Config {
        mode: desired.mode,
        ..config.clone()
    };
    let policy = Policy::build(catalog, &desired.selection(), &config, &config.dns_servers());
    let tables = compile_policy(&policy)?;
    Ok((policy, tables))
}

impl Daemon {
    /// Compiles `desired` and swaps it in whole. On error nothing changed.
    pub(super) fn apply(&mut self, desired: Desired) -> anyhow::Result<u64> {
        let compiled = compile(&self.catalog, &self.config, &desired)?;
        self.put_in_force(compiled, None, None, desired)
    }

    /// The one path by which a policy goes in: a toggle, a reload, a catalog apply or
    /// a rollback compiles first (everything that can fail on bad input fails there),
    /// then hands the result here, which swaps it in and only then takes the catalog,
    /// config and selection it was made from as the daemon's own. On error nothing
    /// changed.
    pub(super) fn put_in_force(
        &mut self,
        (policy, tables): (Policy, Tables),
        catalog: Option<Catalog>,
        config: Option<Config>,
        desired: Desired,
    ) -> anyhow::Result<u64> {
        // Tracking turned on: the connections the host has are tracked before it starts.
        if policy.state.mode == StateMode::Stateful && self.policy.state.mode == StateMode::Stateless {
            seed_flows(&mut self.dataplane);
        }
        if self.learner.is_none() {
            self.dataplane.set_dns_servers(&policy.dns_servers)?;
        }
        self.generation = self.dataplane.install(&tables)?;
        self.last_change = now();
        self.entries = (tables.v4_entries(), tables.v6_entries());
        self.policy = policy;
        self.desired = desired;
        let catalog_changed = catalog.as_ref().is_some_and(|c| *c != self.catalog);
        if let Some(catalog) = catalog {
            self.catalog = catalog;
        }
        if let Some(config) = config {
            self.config = config;
        }
        if catalog_changed {
            self.catalog_in_force();
        }
        if let Some(l) = self.learner.as_mut() {
            l.reconcile(&self.policy, &mut self.dataplane);
        }
        Ok(self.generation)
    }

    /// SIGHUP or `allowgate reload` (`uid`, the peer that asked): the config file
    /// again. Other settings apply at once; a changed selection or mode in the file
    /// replaces the runtime toggles. The verdict is logged either way, and returned for
    /// the socket's answer: the generation now in force, or why the file was refused,
    /// in one line (the previous policy stays).
    pub(super) fn reload(&mut self, uid: Option<u32>) -> Result<u64, String> {
        let result = (|| -> anyhow::Result<u64> {
            let (config, config_catalog) = load_config(Some(&self.config_path))?;
            state::validate_reload(&self.config, &config).map_err(|e| anyhow::anyhow!("{e}"))?;
            let applied = self.applied_catalogs();
            let (catalog, why) = catalog::choose(config_catalog, &config.catalog, applied.current.as_ref());
            if let Some(why) = why {
                warn!("{why}");
            }
            let basis = Desired::of(&config);
            let desired = if basis != self.basis {
                basis.clone()
            } else {
                self.desired.clone()
            };
            let compiled = compile(&catalog, &config, &desired)?;
            self.guard_reload(&catalog, &config, &desired)?;
            let dns_before = self.config.dns.clone();
            self.put_in_force(compiled, Some(catalog), Some(config), desired)?;
            if basis != self.basis {
                self.pending = None;
            }
            self.basis = basis;
            self.reload_learner(&dns_before);
            self.persist()?;
            Ok(self.generation)
        })();
        match result {
            Ok(generation) => {
                info!(generation, uid, "reloaded");
                Ok(generation)
            }
            Err(e) => {
                // One line for the journal and for the client, whatever the cause printed.
                let why = format!("{e:#}").split_whitespace().collect::<Vec<_>>().join(" ");
                error!("reload refused, the previous policy stays enforced: {why}");
                Err(why)
            }
        }
    }

    /// After a reload: `[dns]` as the new config has it. Learning turned on or off takes
    /// effect at once; other changes start a learner afresh (what the old one learned
    /// stays allowed until it expires, and is learned again from the next answers);
    /// either way the give-back paths are proved again, so a path lost at run time can
    /// come back without a restart.
    fn reload_learner(&mut self, before: &crate::policy::config::DnsSettings) {
        let now = &self.config.dns;
        let result = match (self.learner.as_mut(), now.learn) {
            (Some(learner), true) if now == before => {
                learner.prove_again(&self.policy, &mut self.dataplane);
                Ok(())
            }
            (_, true) => Learner::start(&self.policy, now, &mut self.dataplane).map(|l| {
                info!("DNS learning started with the reloaded [dns] settings");
                self.learner = Some(l);
            }),
            (Some(learner), false) => {
                let stopped = learner.stopped_control();
                self.learner = None;
                info!("DNS learning stopped: answers pass untouched from now on");
                self.dataplane.set_dns_control(&stopped).map_err(Into::into)
            }
            (None, false) => Ok(()),
        };
        if let Err(e) = result {
            // Nothing holds answers without a learner that can give them back.
            self.learner = None;
            let _ = self.dataplane.set_dns_control(&DnsControl::default());
            error!("DNS learning is off, answers pass untouched: {e:#}");
        }
    }

    pub(super) fn rollback(&mut self) {
        let Some(pending) = self.pending.take() else { return };
        if pending.catalog_rollback {
            match self.catalog_rollback(
                0,
                ChangeOptions {
                    force: true,
                    ..ChangeOptions::default()
                },
            ) {
                Response::CatalogApplied(a) => {
                    warn!(
                        generation = a.generation,
                        "the catalog was not confirmed in time: rolled back"
                    );
                }
                other => {
                    error!("cannot roll the catalog back, will retry: {other:?}");
                    self.pending = Some(Pending {
                        deadline_ms: now_ms() + 1000,
                        ..pending
                    });
                }
            }
            return;
        }
        match self.apply(pending.previous.clone()) {
            Ok(generation) => warn!(generation, "the change was not confirmed in time: rolled back"),
            Err(e) => {
                error!("cannot roll back, will retry: {e:#}");
                self.pending = Some(Pending {
                    deadline_ms: now_ms() + 1000,
                    ..pending
                });
            }
        }
        if let Err(e) = self.persist() {
            error!("cannot persist the rollback: {e:#}");
        }
    }

    pub(super) fn handle(&mut self, incoming: Incoming) {
        let Incoming { request, reply, peer } = incoming;
        let response = match request {
            Request::Status => {
                let interfaces = Some(self.interface_statuses());
                match status::report(&self.config.bpffs_dir, Some(&self.record()), true, interfaces) {
                    Ok(status) => Response::Status {
                        status: Box::new(status),
                    },
                    Err(e) => Response::error(crate::error_chain(&e)),
                }
            }
            Request::Check {
                addr,
                port,
                proto,
                direction,
            } => Response::Check {
                explanation: explain(&self.policy, addr, port, proto, direction),
            },
            Request::Learned => Response::Learned {
                entries: self.learner.as_ref().map(learned_entries).unwrap_or_default(),
            },
            Request::Events => {
                let mut rx = self.events.subscribe();
                tokio::spawn(async move {
                    loop {
                        let answer = match rx.recv().await {
                            Ok(event) => Response::Event(event),
                            Err(broadcast::error::RecvError::Lagged(missed)) => Response::Lagged { missed },
                            Err(broadcast::error::RecvError::Closed) => return,
                        };
                        if reply.send(answer).await.is_err() {
                            return;
                        }
                    }
                });
                return;
            }
            Request::Confirm => match self.pending.take() {
                Some(_) => {
                    info!(uid = peer.uid, generation = self.generation, "change confirmed");
                    match self.persist() {
                        Ok(()) => Response::Confirmed {
                            generation: self.generation,
                        },
                        Err(e) => Response::error(format!("confirmed, but cannot persist it: {e:#}")),
                    }
                }
                None => Response::error("nothing awaits confirmation"),
            },
            Request::Enable {
                regions,
                features,
                options,
            } => self.change(&peer, options, |d, catalog| {
                for r in &regions {
                    let id = catalog.region(r)?.id.clone();
                    if !d.regions.contains(&id) {
                        d.regions.push(id);
                    }
                }
                for f in &features {
                    let f: Feature = f.parse()?;
                    if !d.features.contains(&f) {
                        d.features.push(f);
                    }
                }
                Ok(())
            }),
            Request::Disable {
                regions,
                features,
                options,
            } => self.change(&peer, options, |d, catalog| {
                for r in &regions {
                    let id = catalog.region(r)?.id.clone();
                    d.regions.retain(|x| *x != id);
                }
                for f in &features {
                    let f: Feature = f.parse()?;
                    d.features.retain(|x| *x != f);
                }
                Ok(())
            }),
            Request::Mode { mode, options } => self.change(&peer, options, |d, _| {
                d.mode = mode;
                Ok(())
            }),
            Request::CatalogApply { path, options } => self.catalog_apply(&peer, &path, options),
            Request::CatalogRollback { options } => self.catalog_rollback(peer.uid, options),
            Request::Reload => {
                let started = Instant::now();
                match self.reload(Some(peer.uid)) {
                    Ok(generation) => Response::Changed(Changed {
                        generation,
                        regions: self.desired.regions.clone(),
                        features: self.desired.features.iter().map(|f| f.to_string()).collect(),
                        mode: self.desired.mode,
                        rollback_in_secs: self.pending.as_ref().map(Pending::remaining_secs),
                        apply_micros: started.elapsed().as_micros() as u64,
                        warnings: Vec::new(),
                    }),
                    Err(why) => Response::error(format!("reload refused, the previous policy stays enforced: {why}")),
                }
            }
        };
        let _ = reply.try_send(response);
    }

    /// One runtime change: edit a copy of the desired state, refuse what would lock the
    /// caller out, apply, persist, and arm the rollback when asked.
    pub(super) fn change(
        &mut self,
        peer: &server::Peer,
        options: ChangeOptions,
        edit: impl FnOnce(&mut Desired, &Catalog) -> anyhow::Result<()>,
    ) -> Response {
        let mut desired = self.desired.clone();
        if let Err(e) = edit(&mut desired, &self.catalog) {
            return Response::error(format!("{e:#}"));
        }
        let started = Instant::now();
        let compiled = match compile(&self.catalog, &self.config, &desired) {
            Ok(x) => x,
            Err(e) => return Response::error(format!("refused, nothing changed: {e:#}")),
        };
        let mut warnings = match state::admit(
            "this change",
            self.pending.as_ref(),
            &options,
            &self.policy,
            &compiled.0,
        ) {
            Ok(w) => w,
            Err(e) => return Response::error(e),
        };
        if desired.regions.is_empty() {
            warnings.push("no region is enabled: only essentials, management and [[allow]] entries pass".to_string());
        }
        let previous = self.desired.clone();
        let generation = match self.put_in_force(compiled, None, None, desired) {
            Ok(g) => g,
            Err(e) => return Response::error(format!("refused, the previous policy stays enforced: {e:#}")),
        };
        let apply_micros = started.elapsed().as_micros() as u64;
        self.pending = options.confirm_secs.map(|secs| Pending {
            previous,
            deadline_ms: now_ms() + secs * 1000,
            catalog_rollback: false,
        });
        if let Err(e) = self.persist() {
            warnings.push(format!(
                "applied, but cannot persist it (a restart would undo it): {e:#}"
            ));
        }
        info!(
            uid = peer.uid,
            generation,
            regions = ?self.desired.regions,
            features = ?self.desired.features,
            mode = self.desired.mode.as_str(),
            confirm = ?options.confirm_secs,
            "changed"
        );
        Response::Changed(Changed {
            generation,
            regions: self.desired.regions.clone(),
            features: self.desired.features.iter().map(|f| f.to_string()).collect(),
            mode: self.desired.mode,
            rollback_in_secs: options.confirm_secs,
            apply_micros,
            warnings,
        })
    }
}

/// The learner's table as `show --learned` prints it, sorted by address and name.
fn learned_entries(learner: &Learner) -> Vec<LearnedEntry> {
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v.dedup();
        v
    };
    let mut out: Vec<LearnedEntry> = learner
        .learned()
        .map(|(l, expires_in_secs)| LearnedEntry {
            address: l.addr,
            name: l.name.to_string(),
            queried: l.queried.clone(),
            features: sorted(
                l.rules
                    .iter()
                    .flat_map(|r| r.features())
                    .map(|f| f.to_string())
                    .collect(),
            ),
            regions: sorted(l.rules.iter().flat_map(|r| r.regions()).map(str::to_string).collect()),
            expires_in_secs,
        })
        .collect();
    out.sort_by(|a, b| (a.address, &a.name).cmp(&(b.address, &b.name)));
    out
}
