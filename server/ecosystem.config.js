// PM2: Synapse and the Agent Chat appservice as two PM2 apps, from the virtualenv.
//
//   agent-chat-server init --data-dir ~/.agent-chat-server      # once (or ./scripts/install.sh)
//   pm2 start server/ecosystem.config.js
//   pm2 save && pm2 startup                                     # survive reboots
//
// Environment (read when PM2 loads this file):
//   AGENT_CHAT_VENV        the virtualenv (default: .venv at the repository root)
//   AGENT_CHAT_SERVER_DIR  the data dir written by init (default: ~/.agent-chat-server)
//
// PM2 restarts either process if it dies (Synapse queues events while the appservice is away,
// and delivers them when it is back). Logs: ~/.pm2/logs/agent-chat-*.log plus DATA_DIR/logs/.
// Do not also run `agent-chat-server start` on the same data dir (the ports would clash).
const os = require("os");
const path = require("path");

const repo = path.resolve(__dirname, "..");
const venv = path.resolve(process.env.AGENT_CHAT_VENV || path.join(repo, ".venv"));
const dataDir = path.resolve(
  process.env.AGENT_CHAT_SERVER_DIR || path.join(os.homedir(), ".agent-chat-server"),
);
const python = path.join(venv, "bin", "python");

const common = {
  script: python,
  interpreter: "none", // run the venv's python directly, not through node
  cwd: dataDir,
  autorestart: true,
  restart_delay: 2000,
  max_restarts: 50,
  kill_timeout: 15000, // SIGTERM, then SIGKILL after 15 s
  time: true,
  env: { PYTHONUNBUFFERED: "1" },
};

module.exports = {
  apps: [
    {
      ...common,
      name: "agent-chat-synapse",
      args: ["-m", "synapse.app.homeserver", "-c", path.join(dataDir, "homeserver.yaml")],
    },
    {
      ...common,
      name: "agent-chat-appservice",
      args: ["-m", "agent_chat_appservice", "-c", path.join(dataDir, "appservice.yaml")],
    },
  ],
};
