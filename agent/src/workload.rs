//! Which container and Kubernetes pod a process belongs to, read from its
//! `/proc/PID/cgroup` (the container runtimes name cgroups after the
//! container id, and the kubelet after the pod uid).
//!
//! Input: the text of a `/proc/PID/cgroup` file. Output: the ids found in
//! it. Pure, so every runtime's naming is tested without that runtime.

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
        std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .map(|text| CgroupIdentity::parse(&text))
            .unwrap_or_default()
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
}
