package streamrs.opensearch;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.Collection;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CountDownLatch;

import org.opensearch.analysis.common.CommonAnalysisPlugin;
import org.opensearch.cluster.service.ClusterService;
import org.opensearch.common.settings.Settings;
import org.opensearch.env.Environment;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.plugins.Plugin;
import org.opensearch.transport.Netty4Plugin;

/**
 * Starts a real single-node OpenSearch 2.19 on loopback for the tests.
 *
 * <p>Usage: {@code TestNode HOME HTTP_PORT TRANSPORT_PORT}. HOME gets config/, modules/,
 * plugins/, data/ and logs/. The node runs until the process gets SIGTERM or SIGINT, then closes
 * cleanly.
 *
 * <p>It embeds {@link Node} directly instead of going through Bootstrap, so there is no root
 * check, no security manager and no jar-hell check: fine for a throwaway test node, not for
 * production.
 */
public final class TestNode {
  private TestNode() {}

  /** A node with classpath plugins and no node/cluster id listener (that needs Bootstrap). */
  static final class EmbeddedNode extends Node {
    EmbeddedNode(Environment environment, Collection<Class<? extends Plugin>> plugins) {
      super(environment, plugins, true);
    }

    @Override
    protected void configureNodeAndClusterIdStateListener(ClusterService clusterService) {}
  }

  public static void main(String[] args) throws Exception {
    if (args.length != 3) {
      System.err.println("usage: TestNode HOME HTTP_PORT TRANSPORT_PORT");
      System.exit(2);
    }
    Path home = Paths.get(args[0]).toAbsolutePath();
    int httpPort = Integer.parseInt(args[1]);
    int transportPort = Integer.parseInt(args[2]);
    for (String dir : List.of("config", "modules", "plugins", "data", "logs")) {
      Files.createDirectories(home.resolve(dir));
    }

    String nodeName = "stream-rs-test-node";
    Settings settings =
        Settings.builder()
            .put("path.home", home.toString())
            .put("path.data", home.resolve("data").toString())
            .put("path.logs", home.resolve("logs").toString())
            .put("cluster.name", "stream-rs-test")
            .put("node.name", nodeName)
            .put("discovery.type", "single-node")
            .put("network.host", "127.0.0.1")
            .put("http.port", httpPort)
            .put("transport.port", transportPort)
            // A nearly full disk would otherwise make the indices read-only.
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            .build();
    Environment environment =
        InternalSettingsPreparer.prepareEnvironment(
            settings, Map.of(), home.resolve("config"), () -> nodeName);
    Node node = new EmbeddedNode(environment, List.of(Netty4Plugin.class, CommonAnalysisPlugin.class));

    CountDownLatch closed = new CountDownLatch(1);
    Runtime.getRuntime()
        .addShutdownHook(
            new Thread(
                () -> {
                  try {
                    node.close();
                  } catch (IOException e) {
                    e.printStackTrace();
                  }
                  closed.countDown();
                },
                "test-node-shutdown"));

    node.start();
    System.out.println(
        "opensearch test node started: http://127.0.0.1:" + httpPort + " (transport " + transportPort + ")");
    System.out.flush();
    closed.await();
  }
}
