"""The boards' words in English and Vietnamese: titles, panel names, units, value names.

One small catalogue: a key maps to ``(English, Vietnamese)``. Boards name keys, never literal text, so a board
exists once and renders in either language (``ioc dashboards build --locale vi``). Units are keys too: a
symbol (``%``, ``°C``, ``µg/m³``) is the same in both languages and maps to Grafana's unit id; a counted thing
("devices", "thiết bị") becomes a Grafana suffix unit in the chosen language.
"""

from __future__ import annotations

from typing import Final, Literal, get_args

Locale = Literal["en", "vi"]
LOCALES: Final[tuple[str, ...]] = get_args(Locale)

#: key -> (English, Vietnamese)
MESSAGES: Final[dict[str, tuple[str, str]]] = {
    # folders
    "folder.operations": ("Operations", "Vận hành"),
    "folder.leadership": ("Leadership", "Lãnh đạo"),
    # boards
    "board.health": ("City device health", "Tình trạng thiết bị toàn thành phố"),
    "board.site": ("Site drill-down", "Chi tiết theo điểm"),
    "board.site_named": ("Site {site}", "Điểm {site}"),
    "board.environment": ("Environmental sensors", "Cảm biến môi trường"),
    "board.gateways": ("Gateways", "Gateway (thiết bị biên)"),
    "board.hub": ("Hub health", "Tình trạng máy chủ trung tâm"),
    "board.cameras": ("Camera fleet", "Hệ thống camera"),
    "board.displays": ("Variable message signs", "Biển báo điện tử"),
    "board.city": ("City at a glance", "Toàn cảnh thành phố"),
    # variables
    "var.site": ("Site", "Điểm"),
    "var.device": ("Device", "Thiết bị"),
    "var.ward": ("Ward", "Phường/Quận"),
    # panels: health
    "panel.gateways_online": ("Gateways online", "Gateway trực tuyến"),
    "panel.gateways_offline": ("Gateways offline", "Gateway mất kết nối"),
    "panel.gateway_table": ("Gateways and their last state", "Gateway và trạng thái gần nhất"),
    "panel.gateway_timeline": ("Gateway connectivity", "Kết nối gateway theo thời gian"),
    "panel.device_events": ("Device health events", "Sự kiện tình trạng thiết bị"),
    "panel.worst_devices": ("Devices with the most faults", "Thiết bị lỗi nhiều nhất"),
    "panel.readings_by_kind": ("Readings stored, by kind", "Số bản ghi đã lưu theo loại"),
    "panel.devices_reporting": ("Devices reporting by kind", "Thiết bị đang gửi dữ liệu theo loại"),
    "panel.devices_map": ("Devices on the map", "Bản đồ thiết bị"),
    "panel.device_states": ("Devices by state", "Thiết bị theo trạng thái"),
    "panel.device_uptime": ("Device uptime in range", "Tỷ lệ thời gian hoạt động của thiết bị"),
    "panel.device_timeline": ("Device states over time", "Trạng thái thiết bị theo thời gian"),
    "panel.devices_online": ("Devices online", "Thiết bị trực tuyến"),
    "panel.devices_not_online": ("Devices not online", "Thiết bị không trực tuyến"),
    "panel.health_events": ("Health events in range", "Sự kiện trong khoảng thời gian"),
    "panel.device_table": ("Every device and its state", "Danh sách thiết bị và trạng thái"),
    "panel.site_devices": ("Devices of the site", "Thiết bị tại điểm"),
    # panels: environment
    "panel.pm25": ("PM2.5", "Bụi PM2.5"),
    "panel.pm10": ("PM10", "Bụi PM10"),
    "panel.pm_now": ("PM2.5 now", "PM2.5 hiện tại"),
    "panel.temperature": ("Temperature", "Nhiệt độ"),
    "panel.humidity": ("Relative humidity", "Độ ẩm tương đối"),
    "panel.water_level": ("Water level", "Mực nước"),
    "panel.rain": ("Rainfall", "Lượng mưa"),
    "panel.power": ("Power draw", "Công suất tiêu thụ"),
    "panel.energy": ("Energy imported", "Điện năng tiêu thụ"),
    "panel.voltage": ("Voltage", "Điện áp"),
    # panels: air quality index
    "panel.aqi_hourly": ("VN_AQI hourly", "VN_AQI theo giờ"),
    "panel.aqi_daily": ("VN_AQI today", "VN_AQI trong ngày"),
    "panel.aqi_by_ward": ("Air quality by ward today (VN_AQI)", "Chất lượng không khí theo phường hôm nay (VN_AQI)"),
    "panel.aqi_now": ("VN_AQI now", "VN_AQI hiện tại"),
    "panel.aqi_dominant": ("Main pollutant", "Thông số chính"),
    # panels: leadership
    "panel.online_share": ("Devices online, share", "Tỷ lệ thiết bị trực tuyến"),
    "panel.online_share_by_ward": ("Devices online by ward", "Tỷ lệ thiết bị trực tuyến theo phường"),
    "panel.camera_availability_by_ward": (
        "Cameras online with a good image this month, by ward",
        "Tỷ lệ camera trực tuyến với hình ảnh tốt trong tháng theo phường",
    ),
    "panel.alerts_open": ("Open alerts now, by severity", "Cảnh báo đang mở theo mức độ"),
    "panel.alerts_open_by_ward": ("Open alerts now, by ward", "Cảnh báo đang mở theo phường"),
    "panel.alerts_trend": ("Open alerts over time, by severity", "Diễn biến số cảnh báo đang mở theo mức độ"),
    "panel.resolved_in_time": ("Incidents resolved in time", "Tỷ lệ sự cố được xử lý đúng hạn"),
    "panel.resolved_in_time_by_ward": (
        "Incidents resolved in time, by ward",
        "Tỷ lệ sự cố được xử lý đúng hạn theo phường",
    ),
    "panel.kpi_latest": ("City indicators", "Chỉ tiêu của thành phố"),
    "panel.kpi_trend": ("City indicators over time", "Diễn biến chỉ tiêu"),
    "panel.faults_trend": ("Device faults (changes out of online)", "Sự cố thiết bị (chuyển khỏi trực tuyến)"),
    # panels: site drill-down
    "panel.device_readings": ("Readings of the selected device", "Số liệu của thiết bị đã chọn"),
    "panel.site_events": ("Health events at this site", "Sự kiện tại điểm này"),
    # panels: hub
    "panel.hub_ingest": ("Ingest rate", "Tốc độ tiếp nhận"),
    "panel.hub_latency": ("Ingest latency", "Độ trễ tiếp nhận"),
    "panel.hub_dead_letters": ("Dead letters", "Tin nhắn bị từ chối"),
    "panel.hub_seq_gaps": ("Sequence gaps", "Thiếu số thứ tự"),
    "panel.hub_pending": ("Messages awaiting storage", "Tin nhắn chờ lưu"),
    "panel.hub_spill": ("Lines spilled to disk", "Bản ghi lưu tạm ra đĩa"),
    "panel.hub_links": ("MQTT and InfluxDB links", "Kết nối MQTT và InfluxDB"),
    # panels: gateways
    "panel.agent_outbox": ("Agent outbox (readings waiting)", "Hàng đợi của agent (bản ghi chờ gửi)"),
    "panel.agent_dropped": ("Readings dropped by agents", "Bản ghi bị agent loại bỏ"),
    "panel.agent_reconnects": ("Agent reconnects", "Số lần agent kết nối lại"),
    "panel.agent_cpu": ("Agent CPU", "CPU của agent"),
    "panel.host_cpu": ("Gateway CPU", "CPU của gateway"),
    "panel.host_memory": ("Gateway memory used", "Bộ nhớ gateway đã dùng"),
    "panel.host_disk": ("Gateway disk used", "Ổ đĩa gateway đã dùng"),
    # panels: signs
    "panel.sign_status": ("Sign error status (0 = no error)", "Trạng thái lỗi biển báo (0 = không lỗi)"),
    "panel.sign_message": ("Message shown now", "Nội dung đang hiển thị"),
    "panel.sign_temperature": ("Cabinet temperature", "Nhiệt độ tủ điều khiển"),
    "panel.sign_pixels": ("Pixel failures", "Điểm ảnh hỏng"),
    "panel.sign_power": ("Power supply failures", "Lỗi nguồn điện"),
    # panels: cameras
    "panel.camera_reachability": ("Camera reachability (ONVIF, RTSP)", "Khả năng kết nối camera (ONVIF, RTSP)"),
    "panel.camera_fps": ("Frame rate", "Tốc độ khung hình"),
    "panel.camera_bitrate": ("Bitrate", "Tốc độ bit"),
    "panel.camera_response": ("ONVIF answer time", "Thời gian phản hồi ONVIF"),
    # series and values
    "value.online": ("Online", "Trực tuyến"),
    "value.offline": ("Offline", "Mất kết nối"),
    "value.target": ("Target", "Mục tiêu"),
    "value.ok": ("OK", "Bình thường"),
    "value.failing": ("Failing", "Lỗi"),
    "state.online": ("Online", "Trực tuyến"),
    "state.degraded": ("Degraded", "Suy giảm"),
    "state.unknown": ("Unknown", "Không rõ"),
    "state.offline": ("Offline", "Mất kết nối"),
    # VN_AQI bands (Decision 1459/QĐ-TCMT, Table 1; hub/operations/aqi.py BANDS holds the same names and colours)
    "aqi.band.1": ("Good", "Tốt"),
    "aqi.band.2": ("Moderate", "Trung bình"),
    "aqi.band.3": ("Poor", "Kém"),
    "aqi.band.4": ("Bad", "Xấu"),
    "aqi.band.5": ("Very bad", "Rất xấu"),
    "aqi.band.6": ("Hazardous", "Nguy hại"),
    # units
    "unit.devices": ("devices", "thiết bị"),
    "unit.gateways": ("gateways", "gateway"),
    "unit.events": ("events", "sự kiện"),
    "unit.alerts": ("alerts", "cảnh báo"),
    "unit.readings": ("readings", "bản ghi"),
    "unit.messages": ("messages", "tin nhắn"),
    "unit.lines": ("lines", "bản ghi"),
    "unit.per_s": ("/s", "/giây"),
    "unit.fps": ("frames/s", "khung hình/giây"),
    # descriptions
    "desc.aqi": (
        (
            "Vietnam's official air quality index (VN_AQI, Decision 1459/QĐ-TCMT, 2019), computed by the hub: hourly "
            "from the Nowcast of PM2.5 and PM10 (and O3, NO2, SO2, CO where measured), daily from 24-hour means. "
            "Bands: 0-50 good, 51-100 moderate, 101-150 poor, 151-200 bad, 201-300 very bad, 301-500 hazardous."
        ),
        (
            "Chỉ số chất lượng không khí Việt Nam (VN_AQI, Quyết định 1459/QĐ-TCMT năm 2019), do máy chủ "
            "trung tâm tính: theo giờ từ giá trị Nowcast của PM2.5 và PM10 (và O3, NO2, SO2, CO nếu có đo), theo "
            "ngày từ giá trị trung bình 24 giờ. Thang: 0-50 tốt, 51-100 trung bình, 101-150 kém, 151-200 xấu, "
            "201-300 rất xấu, 301-500 nguy hại."
        ),
    ),
    "desc.pm": (
        "Concentration in µg/m³; the coloured bands are the breakpoints of Decision 1459/QĐ-TCMT, Table 2.",
        "Nồng độ µg/m³; các dải màu là các ngưỡng BP của Quyết định 1459/QĐ-TCMT, Bảng 2.",
    ),
    "desc.online_share": (
        "Share of devices whose last health state is online; green at or above the target.",
        "Tỷ lệ thiết bị có trạng thái gần nhất là trực tuyến; màu xanh khi đạt hoặc vượt mục tiêu.",
    ),
    "desc.camera_availability": (
        (
            "Share of this month's time (city time zone) in which the ward's cameras were online with a good "
            "image; time the hub could not tell (a gateway down) is left out. The figures of the monthly "
            "availability report (GET /api/v1/reports/availability), updated every 5 minutes. Green at or above "
            "the target."
        ),
        (
            "Tỷ lệ thời gian trong tháng này (theo giờ thành phố) mà camera của phường trực tuyến với hình ảnh "
            "tốt; thời gian máy chủ trung tâm không xác định được (gateway mất kết nối) không được tính. Số liệu "
            "của báo cáo tỷ lệ hoạt động hằng tháng (GET /api/v1/reports/availability), cập nhật 5 phút một lần. "
            "Màu xanh khi đạt hoặc vượt mục tiêu."
        ),
    ),
    "desc.uptime": (
        "Share of the minutes in the time range each device was online (from its health transitions).",
        "Tỷ lệ số phút trong khoảng thời gian mà thiết bị ở trạng thái trực tuyến (theo các lần chuyển trạng thái).",
    ),
    "desc.alerts_open": (
        (
            "Alerts firing or acknowledged and not yet resolved (critical, major, warning, info), counted by the "
            "hub every minute; wards from the device registry."
        ),
        (
            "Các cảnh báo đang phát hoặc đã được tiếp nhận nhưng chưa xử lý xong (nghiêm trọng, lớn, cảnh báo, "
            "thông tin), máy chủ trung tâm đếm mỗi phút; phường theo danh mục thiết bị."
        ),
    ),
    "desc.resolved_in_time": (
        (
            "Share of the alerts resolved in the time range that were resolved within the target of their "
            "severity (critical 1 h, major 4 h, warning and info 24 h); green at or above the target share."
        ),
        (
            "Tỷ lệ cảnh báo đã xử lý xong trong khoảng thời gian được xử lý trong thời hạn theo mức độ (nghiêm "
            "trọng 1 giờ, lớn 4 giờ, cảnh báo và thông tin 24 giờ); màu xanh khi đạt hoặc vượt mục tiêu."
        ),
    ),
    "desc.kpi": (
        "Indicators posted to the hub (POST /api/v1/kpis) by the departments that own them.",
        "Các chỉ tiêu do các đơn vị gửi lên máy chủ trung tâm (POST /api/v1/kpis).",
    ),
}


def text(key: str, locale: Locale, **values: str) -> str:
    """The text of ``key`` in ``locale``, with ``{name}`` placeholders filled; KeyError names an unknown key."""
    try:
        en, vi = MESSAGES[key]
    except KeyError:
        raise KeyError(f"no message {key!r} in dashboards/i18n.py") from None
    return (vi if locale == "vi" else en).format(**values)


#: Units that are symbols: the same in both languages, shown by Grafana itself (its unit ids).
SYMBOL_UNITS: Final[dict[str, str]] = {
    "percent": "percent",
    "celsius": "celsius",
    "ugm3": "conμgm3",
    "metres": "lengthm",
    "mm": "lengthmm",
    "watts": "watt",
    "kwh": "kwatth",
    "volts": "volt",
    "seconds": "s",
    "ms": "ms",
    "kbps": "Kbits",
    "index": "none",
    "bool": "bool",
    "none": "none",
}


def unit(key: str, locale: Locale) -> str:
    """Grafana's ``unit`` for ``key``: a symbol unit id, or ``suffix: <word>`` in the locale for counted things."""
    if key in SYMBOL_UNITS:
        return SYMBOL_UNITS[key]
    return f"suffix: {text(f'unit.{key}', locale)}"
