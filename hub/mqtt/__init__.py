"""The hub's MQTT: a lean MQTT 5 client on the hub's event loop, in two roles over one connection layer.

- :mod:`hub.mqtt.intake`: :class:`~hub.mqtt.intake.MqttIntake` subscribes to the v1 topics and acknowledges a QoS 1
  message only on request (once its lines are stored); the operations hub of a group runs a second one as its QoS 0
  observer (``mqtt.observe: all``).
- :mod:`hub.mqtt.publisher`: :class:`~hub.mqtt.publisher.MqttPublisher` publishes with QoS 1 and awaits each PUBACK,
  whose reason code counts (a refusal raises :class:`~hub.mqtt.publisher.PublishRefused` naming the reason). The
  hub's commands go out through one (``hub/operations/commands.py``).
- :mod:`hub.mqtt.connection`: what both stand on (:class:`~hub.mqtt.connection.Client`: TCP or TLS connect, CONNECT
  and CONNACK, keep-alive, the control packets, reconnects with jitter; :class:`~hub.mqtt.connection.Connection`:
  reads, the packet parser, batched writes).
- :mod:`hub.mqtt.codec`: the packets' encoders and a bulk packet parser.

Every module logs as ``hub.mqtt``. The package imports nothing of the hub's storage, operations or API; of the
ingest side only :mod:`hub.ingest.messages`, the hand-over the pipeline defines (``tests/unit/test_layering.py``).

Why our own client: the hub must acknowledge a QoS 1 message only once its lines are stored (aiomqtt has no
manual acknowledgement), and paho-mqtt, which does, cost the hub about a third of its time under load
(profiled with py-spy: one Python call chain per packet in its network thread, MQTT 5 ``Properties`` parsing
alone ~12 %, plus the hand-over between its thread and the loop). This client speaks the part of MQTT 5 the
hub needs on an asyncio transport.
"""
