"""The printed report's words in English and Vietnamese (with its diacritics), and numbers as each language writes
them (Vietnamese: a decimal comma)."""

from __future__ import annotations

from typing import Final, Literal

Lang = Literal["vi", "en"]
LANGS: Final[tuple[Lang, ...]] = ("vi", "en")

#: key -> (English, Vietnamese)
LABELS: Final[dict[str, tuple[str, str]]] = {
    "title": ("Camera availability report", "Báo cáo tỷ lệ hoạt động của camera"),
    "month": ("Month", "Tháng"),
    "timezone": ("Time zone", "Múi giờ"),
    "period": ("Period", "Khoảng thời gian"),
    "under_way": ("the month is under way: reported up to now", "tháng chưa kết thúc: số liệu đến thời điểm lập"),
    "generated": ("Generated", "Lập lúc"),
    "scope_ward": ("Ward", "Phường"),
    "scope_all": ("All wards this report may show", "Tất cả các phường được phép xem"),
    "total": ("All cameras of the report", "Toàn bộ camera trong báo cáo"),
    "by_ward": ("By ward", "Theo phường"),
    "by_camera": ("By camera", "Theo camera"),
    "faults_by_kind": ("Faults by kind", "Sự cố theo loại"),
    "ward": ("Ward", "Phường"),
    "no_ward": ("(no ward)", "(chưa gán phường)"),
    "site": ("Site", "Địa điểm"),
    "camera": ("Camera", "Camera"),
    "cameras": ("Cameras", "Số camera"),
    "availability": ("Online with a good image", "Trực tuyến, hình ảnh tốt"),
    "online": ("Online", "Trực tuyến"),
    "degraded": ("Degraded", "Suy giảm"),
    "offline": ("Offline", "Mất kết nối"),
    "unknown": ("Unknown (not counted)", "Không xác định (không tính)"),
    "outages": ("Outages", "Số lần gián đoạn"),
    "open": ("Still open", "Chưa khắc phục"),
    "mttr": ("Mean time to restore", "Thời gian khắc phục trung bình"),
    "kind": ("Kind", "Loại sự cố"),
    "episodes": ("Episodes", "Số lần"),
    "time_in_fault": ("Time in fault", "Thời gian sự cố"),
    "no_data": ("no data", "không có dữ liệu"),
    "none": ("none", "không có"),
    "hours": ("h", "giờ"),
    "minutes": ("min", "phút"),
    "fault.offline": ("Offline", "Mất kết nối"),
    "fault.image_black": ("Black image", "Hình ảnh đen"),
    "fault.image_frozen": ("Frozen image", "Hình ảnh bị đứng"),
    "fault.image_blurred": ("Blurred image", "Hình ảnh bị mờ"),
    "fault.image_covered": ("Lens covered", "Ống kính bị che"),
    "fault.view_changed": ("View changed", "Góc quay bị thay đổi"),
    "fault.degraded": ("Other degradation (e.g. flapping)", "Suy giảm khác (ví dụ chập chờn)"),
    "definitions": (
        (
            "Online with a good image: the share of the time the hub knew the camera's state in which it was "
            "online (time unknown, when its gateway was down or before the camera was first seen, is left out and"
            " shown on its own). An outage runs from leaving online for any fault to the return to online; faults"
            " are counted by the month they start in; episodes still open at the end of the period are counted as"
            " open and left out of the mean time to restore. Wards are the registry's today."
        ),
        (
            "Trực tuyến, hình ảnh tốt: tỷ lệ thời gian camera ở trạng thái trực tuyến trên thời gian máy chủ "
            "trung tâm xác định được trạng thái (thời gian không xác định, khi gateway mất kết nối hoặc trước khi"
            " camera được ghi nhận lần đầu, không được tính và được trình bày riêng). Một lần gián đoạn tính từ "
            "khi camera rời trạng thái trực tuyến do bất kỳ sự cố nào đến khi trực tuyến trở lại; sự cố được tính"
            " vào tháng bắt đầu; các sự cố chưa khắc phục khi hết kỳ được ghi là chưa khắc phục và không tính vào"
            " thời gian khắc phục trung bình. Phường theo danh mục hiện tại."
        ),
    ),
}


def label(key: str, lang: Lang) -> str:
    en, vi = LABELS[key]
    return vi if lang == "vi" else en


def percent(share: float | None, lang: Lang) -> str:
    """``98.50 %`` (en) / ``98,50 %`` (vi); the "no data" word for None."""
    if share is None:
        return label("no_data", lang)
    text = f"{share * 100:.2f} %"
    return text.replace(".", ",") if lang == "vi" else text


def duration(seconds: float | None, lang: Lang) -> str:
    """Hours and minutes, rounded to the minute: ``26 h 05 min`` / ``26 giờ 05 phút``; "none" for None."""
    if seconds is None:
        return label("none", lang)
    minutes = round(seconds / 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} {label('hours', lang)} {minutes:02d} {label('minutes', lang)}"
