//! Nova's interface attachments: a port joins a VM as a further NIC (hot-plugged into a
//! running guest where the driver can), or leaves it. A port made for the attachment
//! (given a network) goes when it is detached; an existing port given by id is unbound
//! and kept, as Nova does.

use super::caller::Caller;
use super::ports::{CreatePort, FixedIpRequest, PortView};
use super::{Control, ControlError};
use crate::cluster::store::compute_tables::{VmRecord, VmState, VmStatuses, Vms};
use crate::cluster::store::network_tables::{PortRecord, Ports};
use crate::cluster::store::{StoreError, TxnBuilder, Versioned};

/// Most NICs a VM takes (Strata's VMM has 13 device slots for disks and NICs together).
pub const MAX_NICS: usize = 8;

/// What to attach: an existing port, or a new one on a network.
#[derive(Debug, Clone)]
pub enum Attach {
    Port(String),
    Network {
        network: String,
        fixed_ip: Option<String>,
    },
}

/// A port no longer anyone's NIC.
pub fn release(p: &mut PortRecord) {
    p.device_id.clear();
    p.device_owner.clear();
    p.host = None;
}

impl Control {
    fn caller_vm(&self, caller: &Caller, vm: &str) -> Result<Versioned<VmRecord>, ControlError> {
        self.store
            .get::<Vms>(vm)?
            .filter(|v| caller.sees_project(v.value.project.as_deref()))
            .ok_or_else(|| ControlError::NotFound(format!("Instance {vm} could not be found.")))
    }

    /// Refuses to change the disks or NICs (`what`: "plug NICs into", ...) of a VM whose
    /// driver cannot hot-plug while it runs (Strata's VMM).
    pub(super) fn refuse_hot_change(&self, vm: &str, what: &str) -> Result<(), ControlError> {
        let status = self.store.get::<VmStatuses>(vm)?.map(|s| s.value);
        match status {
            Some(s) if s.driver == "kvm" && s.state != VmState::Shutoff => {
                Err(ControlError::Conflict(format!(
                    "instance {vm} runs on Strata's VMM (the KVM driver), which cannot {what} \
                     a running VM yet: stop it first"
                )))
            }
            _ => Ok(()),
        }
    }

    /// The ports a VM has, in NIC order.
    pub fn vm_ports(&self, caller: &Caller, vm: &str) -> Result<Vec<PortView>, ControlError> {
        let rec = self.caller_vm(caller, vm)?.value;
        rec.ports
            .iter()
            .map(|p| self.port(&Caller::system(), p))
            .collect()
    }

    /// Attaches a port to a VM as its next NIC; returns the port.
    pub async fn attach_vm_port(
        &self,
        caller: &Caller,
        vm: &str,
        what: Attach,
    ) -> Result<PortView, ControlError> {
        caller.need_writer()?;
        let v = self.caller_vm(caller, vm)?;
        self.refuse_hot_change(&v.value.id.0, "plug NICs into")?;
        if v.value.ports.len() >= MAX_NICS {
            return Err(ControlError::Invalid(format!(
                "a VM takes at most {MAX_NICS} NICs"
            )));
        }
        let (port_id, made) = match what {
            Attach::Port(p) => {
                let port = self.find_port(caller, &p)?;
                if v.value
                    .project
                    .as_deref()
                    .is_some_and(|p| p != port.project)
                {
                    return Err(ControlError::NotFound(format!(
                        "Port {p} could not be found."
                    )));
                }
                if !port.device_id.is_empty() || !port.device_owner.is_empty() {
                    return Err(ControlError::Conflict(format!(
                        "Port {} is still in use.",
                        port.id
                    )));
                }
                (port.id, false)
            }
            Attach::Network { network, fixed_ip } => {
                let made = self
                    .create_port(
                        caller,
                        CreatePort {
                            network,
                            name: format!("{}-nic{}", v.value.name, v.value.ports.len()),
                            project: v.value.project.clone(),
                            fixed_ips: fixed_ip.map(|ip| {
                                vec![FixedIpRequest {
                                    subnet: None,
                                    ip: Some(ip),
                                }]
                            }),
                            // Owned by the VM once bound to it (below), so that a
                            // port left over from a failed bind can still be deleted.
                            ..Default::default()
                        },
                    )
                    .await?;
                (made.record.id, true)
            }
        };
        let done = self.bind_to_vm(&v.value.id.0, &port_id, !made).await;
        if done.is_err() && made {
            self.drop_ports(std::slice::from_ref(&port_id)).await;
        }
        done?;
        self.port(&Caller::system(), &port_id)
    }

    /// Adds `port` to the VM's NICs and binds it to the VM's node, in one transaction.
    async fn bind_to_vm(&self, vm: &str, port: &str, kept: bool) -> Result<(), ControlError> {
        loop {
            let v = self.store.get::<Vms>(vm)?.ok_or_else(|| {
                ControlError::NotFound(format!("Instance {vm} could not be found."))
            })?;
            let p = self.store.get::<Ports>(port)?.ok_or_else(|| {
                ControlError::NotFound(format!("Port {port} could not be found."))
            })?;
            let mut rec = v.value.clone();
            if !rec.ports.iter().any(|x| x == port) {
                rec.ports.push(port.to_string());
            }
            if kept && !rec.kept_ports.iter().any(|x| x == port) {
                rec.kept_ports.push(port.to_string());
            }
            let mut pr = p.value.clone();
            pr.device_id = rec.id.0.clone();
            pr.device_owner = "compute:nova".into();
            pr.host = Some(rec.node);
            let txn = TxnBuilder::new()
                .require_revision::<Vms>(vm.to_string(), v.revision)
                .put::<Vms>(vm.to_string(), &rec)
                .require_revision::<Ports>(port.to_string(), p.revision)
                .put::<Ports>(port.to_string(), &pr);
            let msg = format!("port {port} attached to VM {} ({vm})", rec.name);
            match self
                .store
                .commit(self.with_event(txn, "vm.interface_attached", msg))
                .await
            {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Detaches a port from a VM: deleted if it was made for the VM, else unbound and
    /// kept.
    pub async fn detach_vm_port(
        &self,
        caller: &Caller,
        vm: &str,
        port: &str,
    ) -> Result<(), ControlError> {
        caller.need_writer()?;
        loop {
            let v = self.caller_vm(caller, vm)?;
            let mut rec = v.value.clone();
            if !rec.ports.iter().any(|p| p == port) {
                return Err(ControlError::NotFound(format!(
                    "Port {port} is not attached"
                )));
            }
            self.refuse_hot_change(&rec.id.0, "unplug NICs from")?;
            rec.ports.retain(|p| p != port);
            let kept = rec.kept_ports.iter().any(|p| p == port);
            rec.kept_ports.retain(|p| p != port);
            let mut txn = TxnBuilder::new()
                .require_revision::<Vms>(rec.id.0.clone(), v.revision)
                .put::<Vms>(rec.id.0.clone(), &rec);
            if let Some(p) = self.store.get::<Ports>(port)? {
                txn = if kept {
                    let mut pr = p.value.clone();
                    release(&mut pr);
                    txn.require_revision::<Ports>(port.to_string(), p.revision)
                        .put::<Ports>(port.to_string(), &pr)
                } else {
                    super::ports::delete_ops(txn, &p.value)
                };
            }
            let msg = format!("port {port} detached from VM {} ({})", rec.name, rec.id);
            match self
                .store
                .commit(self.with_event(txn, "vm.interface_detached", msg))
                .await
            {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}
