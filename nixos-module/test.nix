# NixOS VM test (flake checks.<system>.vm): a small rootless platform of
# three busybox containers in two stages, images built with dockerTools and
# handed to mcrecover as an image archive (the cold-start path: podman's
# storage is empty at first boot). Asserts that the boot recovery reaches all
# healthy and that a killed container is restarted by the daemon.
#
#   nix build .#checks.x86_64-linux.vm          (or: nix flake check)
#   nix run .#checks.x86_64-linux.vm.driverInteractive   to debug
{ pkgs, module }:
let
  # One busybox image serving a page with httpd; the command is overridable.
  webImage =
    name: page:
    pkgs.dockerTools.buildImage {
      name = "localhost/${name}";
      tag = "1";
      copyToRoot = pkgs.buildEnv {
        name = "${name}-root";
        paths = [
          pkgs.busybox
          (pkgs.writeTextDir "www/index.html" page)
        ];
        pathsToLink = [
          "/bin"
          "/www"
        ];
      };
      config.Cmd = [
        "/bin/httpd"
        "-f"
        "-p"
        "8080"
        "-h"
        "/www"
      ];
    };

  web = webImage "demo-web" "web ok\n";
  api = webImage "demo-api" "api ok\n";

  # platform.image_archive in the layout of docs/images.md (index.json with
  # the sha256 of each archive); mcrecover loads them before each stage.
  archive = pkgs.runCommand "demo-image-archive" { nativeBuildInputs = [ pkgs.jq ]; } ''
    mkdir -p $out
    cp ${web} $out/demo-web_1.tar
    cp ${api} $out/demo-api_1.tar
    entry() {
      jq -n --arg file "$2" --arg sha "$(sha256sum "$out/$2" | cut -d' ' -f1)" \
        --argjson size "$(stat -c %s "$out/$2")" \
        '{($ARGS.positional[0]): {file: $file, sha256: $sha, size: $size, saved_at: "1970-01-01T00:00:01Z"}}' \
        --args "$1"
    }
    { entry localhost/demo-web:1 demo-web_1.tar; entry localhost/demo-api:1 demo-api_1.tar; } \
      | jq -s 'add' > $out/index.json
  '';
in
pkgs.testers.runNixOSTest {
  name = "mcrecover";

  nodes.machine =
    { pkgs, ... }:
    {
      imports = [ module ];

      virtualisation.memorySize = 2048;
      virtualisation.diskSize = 4096;
      environment.systemPackages = [
        pkgs.jq
        pkgs.curl
      ];

      services.mcrecover = {
        enable = true;
        settings = {
          platform = {
            name = "demo";
            node = "machine";
            user = "mcp";
            uid = 850;
            home = "/var/lib/mcp";
            pull = "never";
            image_archive = "${archive}";
          };
          check_defaults = {
            interval = "2s";
            timeout = "1s";
            failure_threshold = 2;
          };
          watch = {
            backoff_initial = "1s";
            backoff_max = "10s";
            escalate_after = 5;
            escalate_window = "10m";
          };
          stages = [
            {
              name = "base";
              services = [ "web" ];
              timeout = "180s";
            }
            {
              name = "apps";
              services = [
                "api"
                "worker"
              ];
              timeout = "180s";
            }
          ];
          services = {
            web = {
              description = "demo web (bridge network, published port)";
              image = "localhost/demo-web:1";
              ports = [ "127.0.0.1:8081:8080" ];
              checks = [
                {
                  kind = "http";
                  url = "http://127.0.0.1:8081/index.html";
                  body_contains = "web ok";
                }
              ];
            };
            api = {
              description = "demo api (host network)";
              image = "localhost/demo-api:1";
              network = "host";
              command = [
                "/bin/httpd"
                "-f"
                "-p"
                "8082"
                "-h"
                "/www"
              ];
              after = [ "web" ];
              checks = [
                {
                  kind = "http";
                  url = "http://127.0.0.1:8082/";
                  body_contains = "api ok";
                }
              ];
            };
            worker = {
              description = "demo worker (host network, tcp check)";
              image = "localhost/demo-api:1";
              container_name = "worker";
              network = "host";
              command = [
                "/bin/httpd"
                "-f"
                "-p"
                "8083"
                "-h"
                "/www"
              ];
              checks = [
                {
                  kind = "tcp";
                  address = "127.0.0.1:8083";
                }
              ];
            };
          };
        };
      };
    };

  testScript = ''
    import json

    def status():
        # exit 1 while something is not healthy: read the JSON regardless
        return json.loads(machine.succeed("mcrecover status --json || true"))

    def service(name):
        return next(s for s in status()["services"] if s["name"] == name)

    machine.wait_for_unit("multi-user.target")
    machine.succeed("mcrecover check-config")
    machine.wait_for_unit("user@850.service")
    machine.wait_for_unit("mcrecover@850.service")

    with subtest("boot recovery reaches all healthy"):
        machine.wait_until_succeeds("mcrecover status", timeout=600)
        snap = status()
        assert snap["phase"] == "watching", snap
        states = {s["name"]: s["state"] for s in snap["services"]}
        assert states == {"web": "healthy", "api": "healthy", "worker": "healthy"}, states
        machine.succeed("curl -fsS http://127.0.0.1:8081/index.html | grep -q 'web ok'")

    with subtest("a killed container is restarted"):
        before = service("web")["total_restarts"]
        machine.succeed(
            "runuser -u mcp -- env XDG_RUNTIME_DIR=/run/user/850 HOME=/var/lib/mcp podman kill web"
        )
        machine.wait_until_succeeds(
            "mcrecover status --json | jq -e "
            + "'.services[] | select(.name == \"web\") | .restarts >= 1 and .state == \"healthy\"'",
            timeout=300,
        )
        assert service("web")["total_restarts"] > before
        machine.wait_until_succeeds("mcrecover status", timeout=120)
        # the restart is in the journal with its stable MESSAGE_ID
        machine.succeed(
            "journalctl -o cat MESSAGE_ID=5e8a0b3c2d1f4e6a9b7c8d0e1f2a3b4c SERVICE=web | grep -q ."
        )

    with subtest("the other services were left alone"):
        assert service("api")["restarts"] == 0
        assert service("worker")["restarts"] == 0
  '';
}
