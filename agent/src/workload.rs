//! Which container and Kubernetes pod a process belongs to.
//!
//! - Container id and pod uid: from `/proc/PID/cgroup` ([`CgroupIdentity`]:
//!   the container runtimes name cgroups after the container id, the
//!   kubelet after the pod uid).
//! - Pod name: in Kubernetes (a pod uid was found, or the process's
//!   environment has `KUBERNETES_SERVICE_HOST`), the `POD_NAME` variable of
//!   the process's environment (`/proc/PID/environ`; the downward API
//!   convention), else its `HOSTNAME`, which the kubelet sets to the pod name.
//! - Pod namespace: the `POD_NAMESPACE` variable, else the service account's
//!   `namespace` file as the process sees it
//!   (`/var/run/secrets/kubernetes.io/serviceaccount/namespace` under
//!   `/proc/PID/root`, its links resolved in that root).
//! - Container name, for a container outside Kubernetes: its `HOSTNAME`
//!   (Docker sets the short id unless `--hostname` is given), else the first
//!   12 characters of the id.
//!
//! A process in no container and not in Kubernetes has none of them.
//! Parsing is pure (cgroup text, environ bytes), so every runtime's naming
//! is tested without that runtime; [`Workload::of`] reads `/proc`, and
//! [`Workloads`] keeps what it read per process.

use std::collections::HashMap;

use serde::Serialize;

use crate::sys;

/// Length of a full container id (hex) for Docker, containerd and CRI-O.
const CONTAINER_ID_LEN: usize = 64;

/// What the cgroup paths of one process say about its container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupIdentity {
    /// The full 64-hex container id, when a path names one.
    pub container_id: Option<String>,
    /// The pod uid, when the process runs under the kubelet's `kubepods`.
    pub pod_uid: Option<String>,
}

impl CgroupIdentity {
    /// Reads the lines of a `/proc/PID/cgroup` file (`ID:CONTROLLERS:PATH`,
    /// cgroup v1 and v2 alike). The naming of the runtimes is recognised:
    ///
    /// - Docker: `/docker/<id>` (cgroupfs driver), `docker-<id>.scope` (systemd);
    /// - containerd: `cri-containerd-<id>.scope`, `/kubepods/…/<id>`, `/<namespace>/<id>`;
    /// - CRI-O: `crio-<id>.scope`, `crio-conmon-<id>.scope` is not the container;
    /// - Podman: `libpod-<id>.scope`;
    /// - kubelet: `kubepods-…-pod<uid>.slice` (systemd, `_` for `-` in the uid)
    ///   or `/kubepods/<qos>/pod<uid>/` (cgroupfs).
    pub fn parse(cgroup_file: &str) -> CgroupIdentity {
        let mut identity = CgroupIdentity::default();
        for line in cgroup_file.lines() {
            let Some(path) = line.splitn(3, ':').nth(2) else {
                continue;
            };
            for segment in path.split('/') {
                if identity.container_id.is_none() {
                    identity.container_id = container_id_in(segment);
                }
                if identity.pod_uid.is_none() {
                    identity.pod_uid = pod_uid_in(segment);
                }
            }
        }
        identity
    }

    /// Reads `/proc/PID/cgroup`; empty when the process is gone.
    pub fn of(pid: u32) -> CgroupIdentity {
        sys::proc::cgroup(pid)
            .map(|text| CgroupIdentity::parse(&text))
            .unwrap_or_default()
    }
}

/// The Kubernetes service account's namespace file, inside the pod.
const NAMESPACE_FILE: &str = "var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// Characters of a container id shown as its name (what `docker ps` shows).
const SHORT_ID_LEN: usize = 12;

/// The container and pod a process runs in; every field `None` for a
/// process on the host.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Workload {
    /// Full 64-hex container id.
    pub container_id: Option<String>,
    /// Kubernetes pod uid.
    pub pod_uid: Option<String>,
    /// Kubernetes pod name.
    pub pod_name: Option<String>,
    /// Kubernetes namespace.
    pub pod_namespace: Option<String>,
    /// Name of a container outside Kubernetes.
    pub container_name: Option<String>,
}

impl Workload {
    /// Reads `/proc/PID/{cgroup,environ}` and, in a pod, the service
    /// account's namespace file. All `None` when the process is gone.
    pub fn of(pid: u32) -> Workload {
        let environ = sys::proc::environ(pid);
        Workload::derive(CgroupIdentity::of(pid), &environ, || {
            sys::files::read_in_root(pid, NAMESPACE_FILE)
        })
    }

    /// The workload from the cgroup ids and the environment (`environ`,
    /// NUL-separated `KEY=VALUE`); `namespace_file` is read only for a pod
    /// without `POD_NAMESPACE`.
    pub fn derive(
        identity: CgroupIdentity,
        environ: &[u8],
        namespace_file: impl FnOnce() -> Option<String>,
    ) -> Workload {
        let var = |key| env_var(environ, key);
        let in_pod = identity.pod_uid.is_some() || var("KUBERNETES_SERVICE_HOST").is_some();
        if in_pod {
            Workload {
                pod_name: var("POD_NAME").or_else(|| var("HOSTNAME")),
                pod_namespace: var("POD_NAMESPACE").or_else(|| non_empty(namespace_file()?.trim())),
                container_id: identity.container_id,
                pod_uid: identity.pod_uid,
                container_name: None,
            }
        } else {
            Workload {
                container_name: identity
                    .container_id
                    .as_ref()
                    .map(|id| var("HOSTNAME").unwrap_or_else(|| id[..SHORT_ID_LEN].to_owned())),
                container_id: identity.container_id,
                ..Workload::default()
            }
        }
    }
}

/// The value of `key` in a `/proc/PID/environ` image; `None` when unset or
/// empty.
pub fn env_var(environ: &[u8], key: &str) -> Option<String> {
    environ
        .split(|&b| b == 0)
        .find_map(|entry| entry.strip_prefix(key.as_bytes())?.strip_prefix(b"="))
        .and_then(|value| non_empty(&String::from_utf8_lossy(value)))
}

fn non_empty(text: &str) -> Option<String> {
    (!text.is_empty()).then(|| text.to_owned())
}

/// Most processes whose workload is kept: past it, one is forgotten for
/// each new one (it is read again when next asked for).
const MAX_CACHED: usize = 4096;

/// The workload of each process seen, read once per process: a process
/// does not change container, and reading `/proc` per call would cost.
#[derive(Debug)]
pub struct Workloads {
    by_pid: HashMap<u32, Workload>,
    read: fn(u32) -> Workload,
}

impl Default for Workloads {
    /// Workloads read from `/proc` ([`Workload::of`]).
    fn default() -> Self {
        Workloads::reading(Workload::of)
    }
}

impl Workloads {
    /// Workloads found by `read` (tests give processes made-up workloads).
    pub fn reading(read: fn(u32) -> Workload) -> Self {
        Workloads {
            by_pid: HashMap::new(),
            read,
        }
    }

    /// The workload of `pid`, read now if not known.
    pub fn get(&mut self, pid: u32) -> &Workload {
        self.get_with(pid, self.read)
    }

    fn get_with(&mut self, pid: u32, read: impl FnOnce(u32) -> Workload) -> &Workload {
        if !self.by_pid.contains_key(&pid) && self.by_pid.len() >= MAX_CACHED {
            if let Some(old) = self.by_pid.keys().next().copied() {
                self.by_pid.remove(&old);
            }
        }
        self.by_pid.entry(pid).or_insert_with(|| read(pid))
    }

    /// Forgets an exited process (its pid can be reused).
    pub fn forget(&mut self, pid: u32) {
        self.by_pid.remove(&pid);
    }
}

/// The container id a cgroup path segment names, if any.
fn container_id_in(segment: &str) -> Option<String> {
    if segment.contains("conmon") {
        // CRI-O's monitor process sits beside the container, not in it.
        return None;
    }
    let name = segment.strip_suffix(".scope").unwrap_or(segment);
    let id = name.rsplit(['-', ':']).next().unwrap_or(name);
    (id.len() == CONTAINER_ID_LEN && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| id.to_ascii_lowercase())
}

/// The pod uid a kubelet cgroup segment names, if any.
fn pod_uid_in(segment: &str) -> Option<String> {
    // cgroupfs: `pod<uid>`; systemd: `kubepods-<qos>-pod<uid_with_underscores>.slice`.
    let uid = match segment.strip_prefix("pod") {
        Some(uid) => uid.to_owned(),
        None => segment
            .strip_suffix(".slice")?
            .rsplit('-')
            .next()?
            .strip_prefix("pod")?
            .replace('_', "-"),
    };
    // A uid is 32 hex digits in the 8-4-4-4-12 pattern.
    let hex = uid.bytes().filter(u8::is_ascii_hexdigit).count();
    (hex == 32 && uid.len() == 36).then_some(uid)
}

/// Whether `wanted` (what a user typed: a full id or a prefix of one, as
/// `docker ps` shows 12 characters) names `container_id`.
pub fn container_id_matches(wanted: &str, container_id: &str) -> bool {
    !wanted.is_empty() && container_id.starts_with(&wanted.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "3f4e1b2c9a8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f";
    const POD: &str = "1b2c3d4e-5f60-4718-8a9b-0c1d2e3f4a5b";

    fn id_of(path: &str) -> Option<String> {
        CgroupIdentity::parse(&format!("0::{path}\n")).container_id
    }

    #[test]
    fn every_runtimes_naming_gives_the_container_id() {
        for path in [
            format!("/docker/{ID}"),
            format!("/system.slice/docker-{ID}.scope"),
            format!("/system.slice/cri-containerd-{ID}.scope"),
            format!("/k8s.io/{ID}"),
            format!("/machine.slice/libpod-{ID}.scope/container"),
            format!("/kubepods.slice/kubepods-burstable.slice/crio-{ID}.scope"),
            format!("/kubepods/besteffort/pod{POD}/{ID}"),
        ] {
            assert_eq!(id_of(&path).as_deref(), Some(ID), "{path}");
        }
    }

    #[test]
    fn hosts_services_and_crio_monitors_are_not_containers() {
        assert_eq!(id_of("/system.slice/ssh.service"), None);
        assert_eq!(id_of("/user.slice/user-0.slice/session-4.scope"), None);
        assert_eq!(
            id_of(&format!("/kubepods.slice/crio-conmon-{ID}.scope")),
            None
        );
        assert_eq!(id_of(&format!("/docker/{}", &ID[..63])), None);
    }

    #[test]
    fn cgroup_v1_lines_are_read_like_v2() {
        let text = format!(
            "12:pids:/docker/{ID}\n4:memory:/docker/{ID}\n1:name=systemd:/docker/{ID}\n0::/\n"
        );
        assert_eq!(
            CgroupIdentity::parse(&text).container_id.as_deref(),
            Some(ID)
        );
    }

    #[test]
    fn the_kubelets_naming_gives_the_pod_uid() {
        let systemd = format!(
            "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/cri-containerd-{ID}.scope\n",
            POD.replace('-', "_")
        );
        let cgroupfs = format!("0::/kubepods/burstable/pod{POD}/{ID}\n");
        for text in [systemd, cgroupfs] {
            let identity = CgroupIdentity::parse(&text);
            assert_eq!(identity.pod_uid.as_deref(), Some(POD), "{text}");
            assert_eq!(identity.container_id.as_deref(), Some(ID), "{text}");
        }
        assert_eq!(
            CgroupIdentity::parse("0::/system.slice/podman.service\n").pod_uid,
            None
        );
    }

    #[test]
    fn a_prefix_names_a_container() {
        assert!(container_id_matches(&ID[..12], ID));
        assert!(container_id_matches(&ID[..12].to_uppercase(), ID));
        assert!(container_id_matches(ID, ID));
        assert!(!container_id_matches("", ID));
        assert!(!container_id_matches("ffff", ID));
    }

    fn in_pod() -> CgroupIdentity {
        CgroupIdentity {
            container_id: Some(ID.into()),
            pod_uid: Some(POD.into()),
        }
    }

    fn no_file() -> Option<String> {
        None
    }

    #[test]
    fn environ_variables_are_found_by_exact_name() {
        let environ = b"PATH=/bin\0HOSTNAME=web-7d9f\0HOSTNAME_X=no\0EMPTY=\0A=b=c\0";
        assert_eq!(env_var(environ, "HOSTNAME").as_deref(), Some("web-7d9f"));
        assert_eq!(env_var(environ, "A").as_deref(), Some("b=c"));
        assert_eq!(env_var(environ, "HOST"), None);
        assert_eq!(env_var(environ, "EMPTY"), None);
        assert_eq!(env_var(b"", "PATH"), None);
    }

    #[test]
    fn a_pod_is_named_by_its_hostname_and_namespaced_by_its_service_account() {
        let environ = b"HOSTNAME=chat-6b7c9-x2x4q\0KUBERNETES_SERVICE_HOST=10.0.0.1\0";
        let workload = Workload::derive(in_pod(), environ, || Some("team-a\n".into()));
        assert_eq!(
            workload,
            Workload {
                container_id: Some(ID.into()),
                pod_uid: Some(POD.into()),
                pod_name: Some("chat-6b7c9-x2x4q".into()),
                pod_namespace: Some("team-a".into()),
                container_name: None,
            }
        );
    }

    #[test]
    fn the_downward_apis_variables_win() {
        let environ = b"HOSTNAME=host\0POD_NAME=chat-0\0POD_NAMESPACE=prod\0";
        let workload = Workload::derive(in_pod(), environ, || panic!("not read"));
        assert_eq!(workload.pod_name.as_deref(), Some("chat-0"));
        assert_eq!(workload.pod_namespace.as_deref(), Some("prod"));
    }

    #[test]
    fn kubernetes_is_known_by_its_environment_when_the_cgroup_says_nothing() {
        let environ = b"HOSTNAME=chat-0\0KUBERNETES_SERVICE_HOST=10.0.0.1\0";
        let workload = Workload::derive(CgroupIdentity::default(), environ, no_file);
        assert_eq!(workload.pod_name.as_deref(), Some("chat-0"));
        assert_eq!(workload.pod_namespace, None);
        assert_eq!(workload.container_id, None);
    }

    #[test]
    fn a_plain_container_is_named_by_its_hostname_else_its_short_id() {
        let docker = CgroupIdentity {
            container_id: Some(ID.into()),
            pod_uid: None,
        };
        let named = Workload::derive(docker.clone(), b"HOSTNAME=api\0", no_file);
        assert_eq!(named.container_name.as_deref(), Some("api"));
        assert_eq!(named.pod_name, None);
        let unnamed = Workload::derive(docker, b"", no_file);
        assert_eq!(unnamed.container_name.as_deref(), Some(&ID[..12]));
        assert_eq!(unnamed.container_id.as_deref(), Some(ID));
    }

    #[test]
    fn a_host_process_has_no_workload() {
        let environ = b"HOSTNAME=laptop\0POD_NAME=x\0";
        assert_eq!(
            Workload::derive(CgroupIdentity::default(), environ, || panic!("not read")),
            Workload::default()
        );
        assert_eq!(Workload::of(u32::MAX), Workload::default());
    }

    #[test]
    fn the_cache_reads_once_per_process_and_stays_bounded() {
        let mut cache = Workloads::default();
        let named = |name: &str| Workload {
            container_name: Some(name.into()),
            ..Workload::default()
        };
        cache.get_with(1, |_| named("first"));
        let again = cache.get_with(1, |_| panic!("read again")).clone();
        assert_eq!(again, named("first"));
        cache.forget(1);
        assert_eq!(cache.get_with(1, |_| named("reused")), &named("reused"));
        for pid in 2..MAX_CACHED as u32 + 10 {
            cache.get_with(pid, |_| Workload::default());
        }
        assert_eq!(cache.by_pid.len(), MAX_CACHED);
    }
}
