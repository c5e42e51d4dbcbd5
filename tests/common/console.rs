//! A signed-in web console session on node 0 of a namespace cluster: curl with a cookie
//! jar in the node's namespace, the CSRF token read from a page.

use super::Cluster;

/// A signed-in console session on node 0 (curl with a cookie jar in its namespace).
pub struct Console<'a> {
    c: &'a Cluster,
    jar: tempfile::TempDir,
    csrf: String,
}

impl<'a> Console<'a> {
    pub fn curl(&self, args: &[&str]) -> String {
        let jar = self.jar.path().join("cookies");
        let o = std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.c.nodes[0].ns,
                "curl",
                "-s",
                "--cacert",
            ])
            .arg(self.c.nodes[0].dir.join("pki/ca.crt"))
            .arg("-b")
            .arg(&jar)
            .arg("-c")
            .arg(&jar)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).to_string()
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}:5000{path}", self.c.nodes[0].ip)
    }

    pub fn sign_in(c: &'a Cluster) -> Console<'a> {
        let pw = super::admin_password(c);
        Self::sign_in_as(c, "admin", &pw)
    }

    /// Signs `user` in (to their first project).
    pub fn sign_in_as(c: &'a Cluster, user: &str, password: &str) -> Console<'a> {
        let mut s = Console {
            c,
            jar: tempfile::tempdir().unwrap(),
            csrf: String::new(),
        };
        s.curl(&[
            "--data-urlencode",
            &format!("username={user}"),
            "--data-urlencode",
            &format!("password={password}"),
            &s.url("/login"),
        ]);
        let page = s.curl(&[&s.url("/instances")]);
        s.csrf = page
            .split("data-csrf=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_else(|| panic!("not signed in: {page}"))
            .to_string();
        s
    }

    /// The CSRF token of this session.
    pub fn csrf(&self) -> &str {
        &self.csrf
    }

    pub fn post(&self, path: &str) -> String {
        self.post_form(path, &[])
    }

    /// Posts a form with these fields (and the CSRF token); the answer with its headers.
    pub fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> String {
        let mut args = vec![
            "-i".to_string(),
            "--data-urlencode".to_string(),
            format!("csrf={}", self.csrf),
        ];
        for (k, v) in fields {
            args.push("--data-urlencode".into());
            args.push(format!("{k}={v}"));
        }
        args.push(self.url(path));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.curl(&args)
    }
}
