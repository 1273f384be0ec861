"""``python -m bench.kafka_requests``: how many requests and messages the local Kafka broker
takes per second, over a window, from its own counters.

Start a load first (``python -m bench --scenarios open --rate 700 --duration 60``, in another
shell), then run this during it. It starts the broker JVM's JMX agent on loopback
(``jcmd <pid> ManagementAgent.start``; the agent stays until the broker stops), compiles a small
JMX reader with the JDK's ``javac`` into a temporary directory, reads
``kafka.network:type=RequestMetrics,name=RequestsPerSec`` per request type and
``kafka.server:type=BrokerTopicMetrics,name=MessagesInPerSec`` at the start and the end of the
window, and prints the rates; with ``--callbacks-per-second`` also per callback. That tells
requests from messages: whether the clients' batching or the messages themselves are what the
broker pays for (``docs/performance.md``). A developer tool: nothing in the test suite runs it.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
REQUESTS = ("Produce", "Fetch", "FetchConsumer", "ListOffsets", "Metadata", "Heartbeat")

READER = """
import javax.management.*;
import javax.management.remote.*;
public class BrokerCounters {
  public static void main(String[] args) throws Exception {
    String url = "service:jmx:rmi:///jndi/rmi://127.0.0.1:" + args[0] + "/jmxrmi";
    try (JMXConnector c = JMXConnectorFactory.connect(new JMXServiceURL(url))) {
      MBeanServerConnection m = c.getMBeanServerConnection();
      for (int i = 1; i < args.length; i++) {
        long total = 0;
        ObjectName pattern = new ObjectName(
            "kafka.network:type=RequestMetrics,name=RequestsPerSec,request=" + args[i] + ",*");
        for (ObjectName o : m.queryNames(pattern, null)) total += (Long) m.getAttribute(o, "Count");
        System.out.println(args[i] + " " + total);
      }
      ObjectName in = new ObjectName("kafka.server:type=BrokerTopicMetrics,name=MessagesInPerSec");
      System.out.println("MessagesIn " + m.getAttribute(in, "Count"));
    }
  }
}
"""


def start_agent(pid: int, port: int) -> None:
    """Start the broker's JMX agent on loopback (an agent already running is left as it is)."""
    options = [
        f"jmxremote.port={port}",
        f"jmxremote.rmi.port={port}",
        "jmxremote.host=127.0.0.1",
        "jmxremote.authenticate=false",
        "jmxremote.ssl=false",
    ]
    subprocess.run(
        ["jcmd", str(pid), "ManagementAgent.start", *options], capture_output=True, check=False
    )


def read_counters(classes: Path, port: int) -> dict[str, int]:
    done = subprocess.run(
        ["java", "-cp", str(classes), "BrokerCounters", str(port), *REQUESTS],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return {name: int(count) for name, count in (line.split() for line in done.stdout.splitlines())}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.kafka_requests", description=__doc__)
    parser.add_argument("--seconds", type=float, default=20.0, help="length of the window")
    parser.add_argument("--jmx-port", type=int, default=29999)
    parser.add_argument(
        "--pid-file", type=Path, default=REPO / ".run" / "kafka" / "kafka.pid", help="the broker's"
    )
    parser.add_argument(
        "--callbacks-per-second", type=float, help="the load's rate, to print per-callback figures"
    )
    args = parser.parse_args()
    start_agent(int(args.pid_file.read_text().split()[0]), args.jmx_port)
    with tempfile.TemporaryDirectory() as workdir:
        classes = Path(workdir)
        (classes / "BrokerCounters.java").write_text(READER)
        subprocess.run(["javac", str(classes / "BrokerCounters.java")], check=True)
        before = read_counters(classes, args.jmx_port)
        started = time.monotonic()
        time.sleep(args.seconds)
        after = read_counters(classes, args.jmx_port)
        elapsed = time.monotonic() - started
    for name, count in after.items():
        rate = (count - before.get(name, 0)) / elapsed
        line = f"{name:<14} {rate:9.1f} /s"
        if args.callbacks_per_second:
            line += f"   {rate / args.callbacks_per_second:6.3f} per callback"
        print(line)


if __name__ == "__main__":
    main()
